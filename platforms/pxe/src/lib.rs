//! bogie: pxe (being written).
