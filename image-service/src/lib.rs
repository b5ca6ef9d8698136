//! Images: references, the registry client (auth, mirrors, platforms), the content store,
//! layer unpacking into overlay-ready directories, image records, garbage collection and
//! filesystem usage.
//!
//! Empty in the foundation: the image issue fills it.
