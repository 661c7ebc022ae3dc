use std::process::ExitCode;

use broker::config::Config;
use tracing_subscriber::{fmt, EnvFilter};

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
