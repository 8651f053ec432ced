use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub fn fill(buffer: &mut Vec<u8>) {
        buffer.push(1);
    }
}

fn main() {}
