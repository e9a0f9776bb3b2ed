//! librados and librbd, loaded at run time with dlopen: the twenty-odd C
//! functions xblade calls, declared by hand (librbd.h 1.16, Ceph Pacific)
//! and resolved once into a table of function pointers. Why dlopen: xblade
//! must build and run on hosts without Ceph; only an `rbd:` export needs
//! the libraries, and then a missing one is an error naming its package.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

/// `rados_t`.
pub type Rados = *mut c_void;
/// `rados_ioctx_t`.
pub type Ioctx = *mut c_void;
/// `rbd_image_t`.
pub type Image = *mut c_void;
/// `rados_xattrs_iter_t`.
pub type XattrsIter = *mut c_void;
/// `rbd_completion_t`.
pub type Completion = *mut c_void;
/// `rbd_callback_t`.
pub type Callback = Option<unsafe extern "C" fn(Completion, *mut c_void)>;

/// `EBLOCKLISTED` of Ceph (ESHUTDOWN): this client instance is on the
/// OSD map's blocklist; nothing it sends is applied any more.
pub const EBLOCKLISTED: c_int = libc::ESHUTDOWN;
/// `EVENT_TYPE_EVENTFD` of librbd.h: completions are announced by writing
/// the image's notification descriptor as an eventfd.
pub const EVENT_TYPE_EVENTFD: c_int = 2;
/// `RBD_FEATURE_EXCLUSIVE_LOCK`.
pub const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
/// `RBD_FEATURE_OBJECT_MAP` (needs exclusive-lock).
pub const FEATURE_OBJECT_MAP: u64 = 1 << 3;
/// `RBD_FEATURE_FAST_DIFF` (needs object-map).
pub const FEATURE_FAST_DIFF: u64 = 1 << 4;
/// `RBD_FEATURE_JOURNALING` (needs exclusive-lock).
pub const FEATURE_JOURNALING: u64 = 1 << 6;

/// Shared objects tried, in order: librados first (librbd needs it).
pub const LIBRADOS: &str = "librados.so.2";
/// See [`LIBRADOS`].
pub const LIBRBD: &str = "librbd.so.1";

macro_rules! table {
    ($( $lib:ident $name:ident : fn($($arg:ty),*) -> $ret:ty; )*) => {
        /// The resolved functions (names as in librados.h and librbd.h).
        #[allow(missing_docs)]
        pub struct Lib {
            $( pub $name: unsafe extern "C" fn($($arg),*) -> $ret, )*
        }

        impl Lib {
            /// Resolve every function in `rados`/`rbd` (dlopen handles).
            ///
            /// # Safety
            ///
            /// The handles must be live dlopen handles of librados and
            /// librbd whose symbols have the declared C signatures.
            unsafe fn resolve(rados: *mut c_void, rbd: *mut c_void) -> Result<Lib, String> {
                Ok(Lib {
                    $( $name: {
                        let h = match stringify!($lib) { "rados" => rados, _ => rbd };
                        let sym = concat!(stringify!($name), "\0");
                        // SAFETY: `h` is a live handle and `sym` is
                        // NUL-terminated.
                        let p = unsafe { libc::dlsym(h, sym.as_ptr().cast()) };
                        if p.is_null() {
                            return Err(format!("{} has no {}", stringify!($lib), stringify!($name)));
                        }
                        // SAFETY: the symbol is the C function of that name,
                        // whose signature the declaration copies from the
                        // Ceph headers.
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(p) }
                    }, )*
                })
            }
        }
    };
}

table! {
    rados rados_create: fn(*mut Rados, *const c_char) -> c_int;
    rados rados_conf_read_file: fn(Rados, *const c_char) -> c_int;
    rados rados_conf_parse_env: fn(Rados, *const c_char) -> c_int;
    rados rados_conf_set: fn(Rados, *const c_char, *const c_char) -> c_int;
    rados rados_connect: fn(Rados) -> c_int;
    rados rados_shutdown: fn(Rados) -> ();
    rados rados_cluster_fsid: fn(Rados, *mut c_char, usize) -> c_int;
    rados rados_pool_lookup: fn(Rados, *const c_char) -> i64;
    rados rados_ioctx_create: fn(Rados, *const c_char, *mut Ioctx) -> c_int;
    rados rados_ioctx_destroy: fn(Ioctx) -> ();
    rados rados_ioctx_set_namespace: fn(Ioctx, *const c_char) -> ();
    rados rados_get_instance_id: fn(Rados) -> u64;
    rados rados_getaddrs: fn(Rados, *mut *mut c_char) -> c_int;
    rados rados_blocklist_add: fn(Rados, *mut c_char, u32) -> c_int;
    rados rados_wait_for_latest_osdmap: fn(Rados) -> c_int;
    rados rados_setxattr: fn(Ioctx, *const c_char, *const c_char, *const c_char, usize) -> c_int;
    rados rados_getxattrs: fn(Ioctx, *const c_char, *mut XattrsIter) -> c_int;
    rados rados_getxattrs_next: fn(XattrsIter, *mut *const c_char, *mut *const c_char, *mut usize) -> c_int;
    rados rados_getxattrs_end: fn(XattrsIter) -> ();
    rados rados_rmxattr: fn(Ioctx, *const c_char, *const c_char) -> c_int;
    rbd rbd_version: fn(*mut c_int, *mut c_int, *mut c_int) -> ();
    rbd rbd_open: fn(Ioctx, *const c_char, *mut Image, *const c_char) -> c_int;
    rbd rbd_open_read_only: fn(Ioctx, *const c_char, *mut Image, *const c_char) -> c_int;
    rbd rbd_close: fn(Image) -> c_int;
    rbd rbd_get_size: fn(Image, *mut u64) -> c_int;
    rbd rbd_get_features: fn(Image, *mut u64) -> c_int;
    rbd rbd_set_image_notification: fn(Image, c_int, c_int) -> c_int;
    rbd rbd_poll_io_events: fn(Image, *mut Completion, c_int) -> c_int;
    rbd rbd_aio_create_completion: fn(*mut c_void, Callback, *mut Completion) -> c_int;
    rbd rbd_aio_readv: fn(Image, *const libc::iovec, c_int, u64, Completion) -> c_int;
    rbd rbd_aio_writev: fn(Image, *const libc::iovec, c_int, u64, Completion) -> c_int;
    rbd rbd_aio_flush: fn(Image, Completion) -> c_int;
    rbd rbd_aio_wait_for_complete: fn(Completion) -> c_int;
    rbd rbd_aio_get_return_value: fn(Completion) -> isize;
    rbd rbd_aio_get_arg: fn(Completion) -> *mut c_void;
    rbd rbd_aio_release: fn(Completion) -> ();
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("librbd")
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc,
    // copied before any other dl call.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// Load `rados` and `rbd` (shared object names) and resolve the table.
/// The error names the Debian package to install.
pub fn load_from(rados: &str, rbd: &str) -> Result<Lib, String> {
    let open = |name: &str| -> Result<*mut c_void, String> {
        let c = CString::new(name).map_err(|_| format!("bad library name {name:?}"))?;
        // SAFETY: `c` is NUL-terminated; loading runs the library's
        // initialisers, which is what linking against it would do.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(format!(
                "cannot load {name} ({}): rbd: exports need the Ceph client libraries, install the Debian package librbd1 (apt-get install librbd1)",
                dlerror()
            ));
        }
        Ok(h)
    };
    let (hr, hb) = (open(rados)?, open(rbd)?);
    // SAFETY: both handles are live (never closed: the table lives for the
    // process) and are librados/librbd.
    unsafe { Lib::resolve(hr, hb) }
        .map_err(|e| format!("{e}: librbd1 too old (xblade needs Ceph 16 Pacific or newer)"))
}

/// The process's table, loaded on first use (a failure is kept: the
/// libraries do not appear while xblade runs).
pub fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| load_from(LIBRADOS, LIBRBD))
        .as_ref()
        .map_err(Clone::clone)
}

/// `-errno` from a C call as a message (`strerror`).
pub fn strerror(r: i64) -> String {
    std::io::Error::from_raw_os_error(i32::try_from(-r).unwrap_or(libc::EIO)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_the_package() {
        let e = load_from("libxblade-no-such-rados.so.2", LIBRBD).unwrap_err();
        assert!(e.contains("libxblade-no-such-rados.so.2"), "{e}");
        assert!(e.contains("librbd1"), "{e}");
    }
}
