//! Placeholder: being ported.

use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};

/// Not yet available.
#[derive(Debug)]
pub struct UniPcMultistep;

impl UniPcMultistep {
    /// Not yet available.
    pub fn new(_config: &SchedulerConfig, _steps: usize) -> Result<crate::Ddim> {
        Err(SchedulerError::config("_class_name", "not yet ported"))
    }
}
