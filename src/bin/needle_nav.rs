//! needle_nav command line: inspect the system's interfaces and check parameter files.

use clap::{Parser, Subcommand};
use needle_nav::config::{self, check_node_config};
use needle_nav::interfaces::{NodeKind, ALL_IN_ONE_EXECUTABLE};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "needle_nav", version, about = "needle_nav: breathing-compensated needle guidance (ROS 2, Rust)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every node with its topics and services (name, type, QoS, direction) as JSON.
    Interfaces,
    /// Validate a ROS 2 parameter file against every node it has a section for.
    CheckConfig {
        /// Parameter file (config/<node>.yaml format).
        file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    needle_nav::ros::runtime::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Interfaces => {
            let nodes: Vec<serde_json::Value> = NodeKind::ALL
                .iter()
                .map(|k| {
                    let endpoints: Vec<serde_json::Value> = k
                        .endpoints()
                        .iter()
                        .map(|(dir, ep)| serde_json::json!({"direction": dir, "name": ep.name, "type": ep.type_name, "qos": ep.qos}))
                        .collect();
                    serde_json::json!({"node": k.name(), "executable": k.name(), "endpoints": endpoints})
                })
                .collect();
            let doc = serde_json::json!({"all_in_one_executable": ALL_IN_ONE_EXECUTABLE, "nodes": nodes});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let mut checked = 0;
            for kind in NodeKind::ALL {
                let section = match config::node_section(&text, kind.name()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                if section.is_empty() {
                    continue;
                }
                if let Err(e) = check_node_config(kind.name(), section, &Vec::new()) {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::from(2);
                }
                println!("{}: {} ok", file.display(), kind.name());
                checked += 1;
            }
            if checked == 0 {
                eprintln!("{}: no section for any needle_nav node", file.display());
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
    }
}
