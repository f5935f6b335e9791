//! bogie: specstub (being written).
