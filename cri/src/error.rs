//! The one place where errors become gRPC statuses.

use tonic::Status;

use crate::state::StateError;

/// Errors a CRI handler can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The state layer failed to record a change.
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match &error {
            Error::InvalidArgument(message) => Status::invalid_argument(message.clone()),
            Error::State(StateError::InvalidId { .. }) => {
                Status::invalid_argument(error.to_string())
            }
            Error::State(_) => Status::internal(error.to_string()),
        }
    }
}

/// The answer for an RPC that Corral does not implement yet: never a fake success.
pub fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by corral yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unimplemented_names_the_rpc() {
        let status = unimplemented("RunPodSandbox");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("RunPodSandbox"));
    }

    #[test]
    fn test_invalid_argument_maps_to_invalid_argument() {
        let status = Status::from(Error::InvalidArgument("bad cidr".into()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
