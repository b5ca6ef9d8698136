//! Images: references, the registry client (auth, mirrors, platforms), the content store,
//! layer unpacking into overlay-ready directories, image records, garbage collection and
//! filesystem usage.

mod config;
pub mod content;
pub mod digest;
mod error;
pub mod hosts;
pub mod index;
pub mod keyed_lock;
pub mod layers;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod unpack;

pub use config::Config;
pub use error::Error;
