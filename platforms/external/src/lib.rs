//! bogie: external (being written).
