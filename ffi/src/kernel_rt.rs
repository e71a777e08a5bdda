//! Runtime glue for the kernel (`target_os = "none"`) build (the pool is registered as the global
//! allocator in `crate::pool`): a panic reports through the host's panic import (WARN, then BUG).

use core::fmt::Write;

use crate::buf::Line;
use crate::ops;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = Line::<200>::new();
    let _ = write!(line, "{}", info);
    if let Some(t) = ops::get() {
        let b = line.as_bytes();
        // SAFETY: `b` is valid for the call; the host's panic never returns.
        unsafe { (t.panic)(b.as_ptr(), b.len()) }
    }
    loop {
        core::hint::spin_loop();
    }
}
