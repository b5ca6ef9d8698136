//! `corral`: a Kubernetes CRI runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral::config::{Config, DEFAULT_CONFIG_TOML, LogFormat};

const DEFAULT_CONFIG_PATH: &str = "/etc/corral/config.toml";

#[derive(Debug, Parser)]
#[command(name = "corral", version, about = "A Kubernetes CRI runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the CRI gRPC API on the configured unix socket.
    Serve {
        /// The config file (default /etc/corral/config.toml; defaults apply if it is absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the config's log_format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Work with the config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// PID 1 of a pod's shared PID namespace (started by `corral serve`, not by hand).
    #[command(hide = true)]
    PodInit {
        #[arg(long)]
        netns: Option<PathBuf>,
        #[arg(long)]
        ipcns: Option<PathBuf>,
        #[arg(long)]
        utsns: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default config with every key documented.
    Default,
    /// Check a config file and print the effective config.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::PodInit {
            netns,
            ipcns,
            utsns,
        } => {
            let namespaces = corral_pod_sandbox::pid_init::PodNamespaces {
                net: netns,
                ipc: ipcns,
                uts: utsns,
            };
            Ok(corral_pod_sandbox::pid_init::run_pod_init(&namespaces)?)
        }
        Command::Serve { config, log_format } => {
            let mut config = load_config(config)?;
            if let Some(format) = log_format {
                config.log_format = format;
            }
            corral::logging::init(&config.log_level, config.log_format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("corral-worker")
                .build()?;
            runtime.block_on(corral::server::serve(config))
        }
        Command::Config { command } => match command {
            ConfigCommand::Default => {
                print!("{DEFAULT_CONFIG_TOML}");
                Ok(())
            }
            ConfigCommand::Check { config } => {
                let config = load_config(config)?;
                print!("{}", toml::to_string(&config)?);
                Ok(())
            }
        },
    }
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    Ok(Config::load(&path, explicit)?)
}
