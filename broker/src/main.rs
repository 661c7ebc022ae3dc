#![deny(unsafe_code)]

use std::process::ExitCode;

use broker::config::Config;
use tracing_subscriber::{fmt, EnvFilter};

/// jemalloc keeps per-connection allocations compact and hands freed memory back
/// to the OS, so RSS falls again after a wave of connections closes.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Purge freed pages in the background within a second, instead of waiting for
/// the next allocation, so idle RSS reflects what is actually in use.
#[cfg(feature = "jemalloc")]
// Naming a symbol that jemalloc reads at start is `unsafe_code` to rustc (a clash
// would be undefined behaviour); this is the one name jemalloc documents for it.
#[allow(non_upper_case_globals, unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt().json().with_env_filter(filter).init();
    } else {
        fmt().with_env_filter(filter).init();
    }
    let args: Vec<String> = std::env::args().collect();
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match broker::server::tls_config(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("broker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match actix_web::rt::System::new().block_on(broker::server::run(config, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}
