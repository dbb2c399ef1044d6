//! The kernel program is the `pagefail-ebpf` binary of this crate; the
//! library target is empty and exists so that `tracer` can name this crate
//! as a build dependency (cargo then rebuilds the object when it changes).
#![no_std]
