//! Assertions on the results of calls: success with the seed in the message, an error of a
//! given kind, and the [`robust_tcp::Error`] an `io::Error` carries.

use std::fmt::Debug;
use std::io;

use robust_tcp::Error;

/// Panics unless `result` is `Ok`, naming `seed` (to replay a proxy's cuts) and `what`.
pub fn expect_ok(seed: u64, what: &str, result: io::Result<()>) {
    if let Err(e) = result {
        panic!("seed {seed}: {what}: {e} (kind {:?})", e.kind());
    }
}

/// Panics unless `result` is an error of `kind`; `what` names the call in the message.
/// Returns the error, for checks of what it carries.
pub fn assert_kind<T: Debug>(what: &str, result: io::Result<T>, kind: io::ErrorKind) -> io::Error {
    match result {
        Ok(v) => panic!("{what}: expected an error of kind {kind:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            e
        }
    }
}

/// The session error `e` carries, if any (a timeout or a plain I/O error carries none).
pub fn session_error(e: &io::Error) -> Option<&Error> {
    e.get_ref()?.downcast_ref()
}

/// The session error `e` carries; panics naming `what` if it carries none.
pub fn carried<'a>(what: &str, e: &'a io::Error) -> &'a Error {
    session_error(e).unwrap_or_else(|| {
        panic!(
            "{what}: the error carries no robust_tcp::Error: {e} (kind {:?})",
            e.kind()
        )
    })
}
