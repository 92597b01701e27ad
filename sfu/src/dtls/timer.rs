//! OpenSSL's DTLS retransmission timer, which the `openssl` crate does not wrap.
//!
//! `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` are C macros over
//! `SSL_ctrl` (ssl.h: `DTLS_CTRL_GET_TIMEOUT` 73, `DTLS_CTRL_HANDLE_TIMEOUT`
//! 74), so neither `openssl` nor `openssl-sys` exports them; this module calls
//! `SSL_ctrl` as the macros do. The timer runs on OpenSSL's own clock (the
//! wall clock), not on str0m's `now`: `get_timeout` gives the time left,
//! which the instance adds to the last `now` str0m gave it.
//!
//! [`start_sooner`] sets the first retransmission after 100 ms instead of
//! OpenSSL's 1 s (then doubling, up to OpenSSL's 60 s): when the server is
//! the DTLS client (FFmpeg answers a=setup:passive) its first ClientHello
//! usually arrives before the peer's DTLS listens, and waiting a full
//! second for the second one delayed FFmpeg's sessions by about 1 s.

// The only unsafe code of the crate: `SSL_ctrl` and `DTLS_set_timer_cb`
// calls on a live `SSL`.
#![allow(unsafe_code)]

use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;

/// The first retransmission timeout, in microseconds.
const FIRST_TIMEOUT_US: libc::c_uint = 100_000;
/// OpenSSL's own ceiling for its doubling timer.
const MAX_TIMEOUT_US: libc::c_uint = 60_000_000;

extern "C" {
    // libssl (ssl.h), OpenSSL 1.1.1 and later; not in openssl-sys.
    fn DTLS_set_timer_cb(
        s: *mut openssl_sys::SSL,
        cb: extern "C" fn(*mut openssl_sys::SSL, libc::c_uint) -> libc::c_uint,
    );
}

/// OpenSSL's timer callback: the next timeout from the last one (0 at the
/// start of each flight).
extern "C" fn next_timeout(_ssl: *mut openssl_sys::SSL, last_us: libc::c_uint) -> libc::c_uint {
    if last_us == 0 {
        FIRST_TIMEOUT_US
    } else {
        last_us.saturating_mul(2).min(MAX_TIMEOUT_US)
    }
}

/// Starts each flight's retransmission timer at 100 ms.
pub(super) fn start_sooner(ssl: &mut SslRef) {
    // SAFETY: `ssl` is a live SSL; the callback is a plain function that
    // touches no memory, valid for the program's life.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), next_timeout) }
}

const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

/// Time left until the running retransmission timer fires (zero when it
/// has), or `None` when no timer runs (no flight is waiting for an answer).
pub(super) fn get_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: `ssl` is a live SSL (borrowed for the call); for this command
    // OpenSSL writes one `struct timeval` through the pointer, which points
    // at `tv` on our stack for the duration of the call.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast(),
        )
    };
    if running != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
}

/// What [`handle_timeout`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fired {
    /// No timer had expired.
    Nothing,
    /// The last flight was written again (to the BIO).
    Retransmitted,
    /// Too many retransmissions: the handshake has failed.
    GaveUp,
}

/// Retransmits the last flight if its timer expired.
pub(super) fn handle_timeout(ssl: &SslRef) -> Fired {
    // SAFETY: `ssl` is a live SSL; the command takes no argument.
    let r = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    match r {
        0 => Fired::Nothing,
        r if r > 0 => Fired::Retransmitted,
        _ => Fired::GaveUp,
    }
}
