//! Whether a shared library can be loaded: `dlopen` then `dlclose`, with `dlerror`'s text when
//! it cannot. diffsr's CUDA build loads the CUDA libraries at run time (cudarc's
//! `dynamic-loading`), and cudarc panics on a library it cannot find; diffsr asks here first,
//! so a missing driver or cuBLAS is a clear error (or a reason to run on the CPU), never a
//! panic. Kept here with the project's other `unsafe` code.

/// Loads and unloads the library `name` (a file name searched as the dynamic loader searches,
/// or a path). `Err` holds the loader's reason. Where there is no `dlopen` (not Linux with
/// glibc) nothing is checked and the answer is `Ok`.
pub fn try_open(name: &str) -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(c_name) = std::ffi::CString::new(name) else {
            return Err(format!("`{name}` contains a NUL byte"));
        };
        // SAFETY: `c_name` is a NUL-terminated string that outlives the call. Loading runs the
        // library's initialisers, as the later load by cudarc would; RTLD_LOCAL keeps its
        // symbols out of the global namespace, so nothing else binds to them.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror takes no arguments; it returns null or a NUL-terminated string
            // owned by the loader, valid until the next dl* call on this thread, and copied out
            // before any.
            let reason = unsafe {
                let text = libc::dlerror();
                if text.is_null() {
                    "the dynamic loader gave no reason".to_owned()
                } else {
                    std::ffi::CStr::from_ptr(text)
                        .to_string_lossy()
                        .into_owned()
                }
            };
            return Err(reason);
        }
        // SAFETY: `handle` came from a successful dlopen above and is closed once; no symbol
        // of it was taken, so nothing refers into the library after it is unloaded.
        unsafe { libc::dlclose(handle) };
        Ok(())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = name;
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::try_open;

    #[test]
    fn the_c_library_loads_and_a_missing_one_says_why() {
        assert_eq!(try_open("libc.so.6"), Ok(()));
        let err = try_open("libdiffsr-no-such-library.so.1").unwrap_err();
        assert!(err.contains("libdiffsr-no-such-library.so.1"), "{err}");
        assert!(try_open("nul\0inside").unwrap_err().contains("NUL"));
    }
}
