use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub async fn count() -> u32 {
        let shared = std::rc::Rc::new(1);
        hotswap_runtime::rt::yield_now().await;
        *shared
    }
}

fn main() {}
