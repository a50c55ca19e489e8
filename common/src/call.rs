//! `<service> call METHOD PATH [BODY]`: a request to the service on this machine, for `kubectl exec`
//! (images need no curl or wget). STUB: implemented with ztm (issue 6).

/// If the process was started as `<bin> call ...`, runs the call and returns the exit code.
pub fn from_args() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("call") {
        return None;
    }
    eprintln!("call: not implemented yet");
    Some(2)
}
