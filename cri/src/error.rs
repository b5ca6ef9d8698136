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
    /// The image service failed.
    #[error(transparent)]
    Image(#[from] corral_image_service::Error),
    /// The request is valid but the runtime is not in a state to serve it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A CNI plugin failed.
    #[error("pod network: {0}")]
    Cni(#[from] corral_cni::Error),
    /// Setting up or tearing down a pod sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] corral_pod_sandbox::Error),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The container runtime (spec, rootfs, monitor) failed.
    #[error(transparent)]
    Runtime(#[from] corral_runtime::Error),
    /// Something that should not fail did.
    #[error("{0}")]
    Internal(String),
    /// The request ran past its deadline (an exec's timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The streaming server refused a request.
    #[error(transparent)]
    Streaming(#[from] crate::streaming::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match &error {
            Error::InvalidArgument(message) => Status::invalid_argument(message.clone()),
            Error::State(StateError::InvalidId { .. }) => {
                Status::invalid_argument(error.to_string())
            }
            Error::State(_) | Error::Internal(_) | Error::Cni(_) => {
                Status::internal(error.to_string())
            }
            Error::FailedPrecondition(message) => Status::failed_precondition(message.clone()),
            Error::NotFound(message) => Status::not_found(message.clone()),
            Error::Runtime(
                corral_runtime::Error::InvalidArgument(_) | corral_runtime::Error::Unsupported(_),
            ) => Status::invalid_argument(error.to_string()),
            Error::Runtime(_) => Status::internal(error.to_string()),
            Error::Sandbox(corral_pod_sandbox::Error::InvalidArgument(message)) => {
                Status::invalid_argument(message.clone())
            }
            Error::Sandbox(_) => Status::internal(error.to_string()),
            Error::Image(image_error) => image_status(image_error, error.to_string()),
            Error::DeadlineExceeded(message) => Status::deadline_exceeded(message.clone()),
            Error::Streaming(streaming_error) => {
                use crate::streaming::Error as S;
                match streaming_error {
                    S::MissingContainerId
                    | S::MissingSandboxId
                    | S::TtyWithStderr
                    | S::NoStreams => Status::invalid_argument(error.to_string()),
                    S::TooManyInFlight { .. } => Status::resource_exhausted(error.to_string()),
                    _ => Status::internal(error.to_string()),
                }
            }
        }
    }
}

fn image_status(error: &corral_image_service::Error, message: String) -> Status {
    use corral_image_service::Error as E;
    match error {
        E::InvalidReference { .. } | E::InvalidDigest(_) => Status::invalid_argument(message),
        E::NotFound { .. } => Status::not_found(message),
        E::Unauthorized { .. } => Status::permission_denied(message),
        E::NoMatchingPlatform { .. } => Status::failed_precondition(message),
        E::PullStalled { .. } => Status::deadline_exceeded(message),
        E::Registry { .. } => Status::unavailable(message),
        _ => Status::internal(message),
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
