//! bogie: aws (being written).
