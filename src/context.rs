//! The environment every stage and sink works in: the content-addressed cache, the registry
//! client, and where progress goes. One value passed down instead of three arguments.

use crate::cache::Cache;
use crate::registry::RegistryClient;
use crate::report::Reporter;

/// What every stage of a build and every sink may use.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub cache: &'a Cache,
    pub client: &'a RegistryClient,
    pub reporter: &'a dyn Reporter,
}

impl<'a> Context<'a> {
    /// The same context, reporting to `reporter` (a platform's prefixed reporter, say).
    pub(crate) fn reporting_to(self, reporter: &'a dyn Reporter) -> Context<'a> {
        Context { reporter, ..self }
    }
}
