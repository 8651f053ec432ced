use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub unsafe fn read(address: usize) -> u8 {
        unsafe { *(address as *const u8) }
    }
}

fn main() {}
