//! Process signals without handlers: the signals a server reacts to are blocked in every
//! thread (threads inherit the mask of the thread that spawns them, so block them before
//! spawning any) and one thread takes them synchronously with `sigwait`. No code ever
//! runs in signal context.

use std::io;
use std::mem::MaybeUninit;

/// A signal set holding `signals`.
fn sigset(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initialises the whole set it is pointed at, so it is
    // initialised before `assume_init`; `sigaddset` only writes inside that set.
    let mut set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    };
    for &signal in signals {
        // SAFETY: `set` is an initialised signal set owned by this frame.
        if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (and so in every thread it spawns after):
/// they stay pending until a thread takes them with [`wait`].
pub fn block(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is a valid signal set; a null old-set pointer is allowed.
    let err = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// Waits until one of `signals` (which must be blocked, see [`block`]) is pending, takes
/// it and returns its number.
pub fn wait(signals: &[libc::c_int]) -> io::Result<libc::c_int> {
    let set = sigset(signals)?;
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is a valid signal set and `signal` a writable int, both live for the
    // whole call.
    let err = unsafe { libc::sigwait(&set, &mut signal) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_raised_in_the_thread_is_taken_by_wait() {
        // In a thread of its own, so the test harness's threads keep their masks.
        std::thread::spawn(|| {
            block(&[libc::SIGUSR2]).unwrap();
            // SAFETY: raise(3) takes no pointer; the signal is blocked in this thread, so
            // it only becomes pending.
            let raised = unsafe { libc::raise(libc::SIGUSR2) };
            assert_eq!(raised, 0);
            assert_eq!(wait(&[libc::SIGUSR2]).unwrap(), libc::SIGUSR2);
        })
        .join()
        .unwrap();
    }
}
