use hotswap_runtime::hot_module;

#[hot_module]
pub mod greeter {
    pub async fn greet(name: &str) -> String {
        format!("hello, {name}")
    }
}

fn main() {}
