//! bogie: cloud (being written).
