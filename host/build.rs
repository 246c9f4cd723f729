//! Builds the kernel crate into PTX (see the `ptx-builder` crate docs).
fn main() {
    ptx_builder::build_for_host("../kernels-gpu");
}
