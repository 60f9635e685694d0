//! Code shared by the benches: each bench that needs it declares `mod common;` and uses the
//! parts it needs (so not every bench uses every item).
#![allow(dead_code)]

pub mod child;
pub mod env;
pub mod machine;
pub mod picture;
pub mod proc_stats;
pub mod random_model;
pub mod readme;
pub mod timing;
