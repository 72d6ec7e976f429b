//! Threads inside a named network namespace (one made with `ip netns add NAME`, a file under
//! `/run/netns`). setns(2) moves only the calling thread, so each closure runs on a new thread
//! that joins the namespace first; the sockets it opens belong to that namespace, and the
//! caller's own thread never moves.

use std::any::Any;
use std::fs::File;
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Why a closure could not run (or finish) inside a namespace. The underlying error is part of
/// the message, since test callers mostly panic with it.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {ns} ({}): {error}", path.display())]
    Open {
        ns: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("joining network namespace {ns} (setns): {error}")]
    Join { ns: String, error: Errno },
    #[error("starting a thread for network namespace {ns}: {error}")]
    Thread { ns: String, error: std::io::Error },
    #[error("the thread in network namespace {ns} panicked: {message}")]
    Panicked { ns: String, message: String },
}

/// Runs `f` on a new thread inside namespace `ns` and waits for it. `f` may borrow from the
/// caller; a panic in it comes back as [`NetnsError::Panicked`].
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    run_at(ns, &Path::new(NETNS_DIR).join(ns), f)
}

/// Starts `f` on a new thread inside namespace `ns`, which runs for as long as `f` does. The
/// thread has joined the namespace when this returns, so a missing namespace or a refused
/// setns is an error here rather than a surprise at `join`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, NetnsError> {
    spawn_at(ns, &Path::new(NETNS_DIR).join(ns), f)
}

fn open(ns: &str, path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|error| NetnsError::Open {
        ns: ns.into(),
        path: path.into(),
        error,
    })
}

/// Moves the calling thread into the namespace `file` refers to.
fn enter(ns: &str, file: File) -> Result<(), NetnsError> {
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|error| NetnsError::Join {
        ns: ns.into(),
        error,
    })
}

fn builder(ns: &str) -> thread::Builder {
    thread::Builder::new().name(format!("netns {ns}"))
}

fn thread_error(ns: &str) -> impl FnOnce(std::io::Error) -> NetnsError + '_ {
    move |error| NetnsError::Thread {
        ns: ns.into(),
        error,
    }
}

fn panicked(ns: &str, payload: &(dyn Any + Send)) -> NetnsError {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    NetnsError::Panicked {
        ns: ns.into(),
        message,
    }
}

fn run_at<T: Send>(ns: &str, path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = open(ns, path)?;
    thread::scope(|scope| {
        let handle = builder(ns)
            .spawn_scoped(scope, || {
                enter(ns, file)?;
                Ok(f())
            })
            .map_err(thread_error(ns))?;
        handle.join().map_err(|p| panicked(ns, &*p))?
    })
}

fn spawn_at<T: Send + 'static>(
    ns: &str,
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, NetnsError> {
    let file = open(ns, path)?;
    let (entered_tx, entered) = mpsc::sync_channel(1);
    let name = ns.to_string();
    let handle = builder(ns)
        .spawn(move || {
            if let Err(e) = enter(&name, file) {
                let _ = entered_tx.send(Err(e));
                // There is no T to return and the caller already has the error: end the
                // thread without running `f` and without the panic hook's message.
                panic::resume_unwind(Box::new(()));
            }
            let _ = entered_tx.send(Ok(()));
            f()
        })
        .map_err(thread_error(ns))?;
    match entered.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        // The thread ended without saying: it panicked before joining the namespace.
        Err(mpsc::RecvError) => Err(match handle.join() {
            Err(p) => panicked(ns, &*p),
            Ok(_) => NetnsError::Panicked {
                ns: ns.into(),
                message: "ended before joining the namespace".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    /// A namespace made with `ip netns add` for one test, deleted on drop.
    struct Namespace(String);

    impl Namespace {
        fn new(tag: &str) -> Namespace {
            let name = format!("test-support-{tag}-{}", std::process::id());
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .expect("running ip (install it with: apt-get install -y iproute2)");
            assert!(
                out.status.success(),
                "ip netns add {name} (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Namespace(name)
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// The inode of the network namespace the calling thread is in.
    fn current_netns() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn closures_run_inside_the_namespace_and_the_caller_stays_put() {
        let ns = Namespace::new("run");
        let target = std::fs::metadata(Path::new(NETNS_DIR).join(&ns.0))
            .unwrap()
            .ino();
        let home = current_netns();
        assert_ne!(home, target);
        // run_in may borrow.
        let seen = String::from("borrowed");
        let inside = run_in(&ns.0, || (current_netns(), seen.len())).unwrap();
        assert_eq!(inside, (target, 8));
        let spawned = spawn_in(&ns.0, current_netns).unwrap();
        assert_eq!(spawned.join().unwrap(), target);
        assert_eq!(current_netns(), home);
    }

    #[test]
    fn a_panic_inside_is_an_error_naming_the_namespace() {
        let ns = Namespace::new("panic");
        let err = run_in(&ns.0, || -> u8 { panic!("boom (expected in test)") }).unwrap_err();
        assert!(matches!(err, NetnsError::Panicked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the thread in network namespace {} panicked: boom (expected in test)",
                ns.0
            )
        );
    }

    #[test]
    fn a_missing_namespace_is_an_open_error() {
        let name = format!("test-support-absent-{}", std::process::id());
        let err = run_in(&name, || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "opening network namespace {name} (/run/netns/{name}): "
            )),
            "{text}"
        );
        let err = spawn_in(&name, || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_no_namespace_is_a_join_error_and_f_never_runs() {
        let not_ns = Path::new("/proc/self/status");
        let err = run_at("status", not_ns, || panic!("ran outside a namespace")).unwrap_err();
        assert!(
            matches!(
                err,
                NetnsError::Join {
                    error: Errno::EINVAL,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("joining network namespace status (setns): "),
            "{err}"
        );
        let err = spawn_at("status", not_ns, || panic!("ran outside a namespace")).unwrap_err();
        assert!(
            matches!(
                err,
                NetnsError::Join {
                    error: Errno::EINVAL,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
