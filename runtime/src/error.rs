/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for something this build cannot do.
    #[error("invalid runtime config: {0}")]
    InvalidConfig(String),
}
