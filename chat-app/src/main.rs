//! `chat-app` serves the chat; `chat-app create-user NAME` adds an account
//! (password read from standard input); `chat-app migrate` only migrates.
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use chat_app::{accounts, db, Config};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage:
  chat-app [serve]            run the web app (settings from the environment, see README)
  chat-app create-user NAME   create an account; the password is read from standard input
  chat-app migrate            apply database migrations and exit";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => serve(),
        ["create-user", name] => create_user(name),
        ["migrate"] => migrate(),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-app: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn serve() -> Result<(), AnyError> {
    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(chat_app::serve(config))
}

fn migrate() -> Result<(), AnyError> {
    let config = Config::from_env()?;
    db::connect_and_migrate(&config.database_url, 1)?;
    Ok(())
}

fn create_user(name: &str) -> Result<(), AnyError> {
    let config = Config::from_env()?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {name}: ");
        std::io::stderr().flush()?;
    }
    let mut password = String::new();
    stdin.lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let pool = db::connect_and_migrate(&config.database_url, 1)?;
    let mut conn = pool.get()?;
    let user = accounts::create(&mut conn, name, password)?;
    println!("created user {} (id {})", user.username, user.id);
    Ok(())
}
