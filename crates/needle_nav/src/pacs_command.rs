//! `needle_nav pacs echo|find|get|store`: check the link to the PACS with the settings the nodes
//! will use (the `pacs` block of a parameter file), before launching them.

use clap::{Args, Subcommand};
use needle_nav_nodes::config::{self as cfgmod, TrajectoryPlannerConfig, VesselSegmentationConfig};
use needle_nav_pacs::PacsConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PacsArgs {
    #[command(subcommand)]
    pub action: PacsAction,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Subcommand, Debug)]
pub enum PacsAction {
    /// C-ECHO: is the PACS there, and does it accept our AE title? Prints the round trip time.
    Echo,
    /// C-FIND at series level: the series of a study, or where a series is.
    Find {
        /// StudyInstanceUID (its series are listed).
        #[arg(long, default_value = "")]
        study: String,
        /// SeriesInstanceUID (the study it is in is shown).
        #[arg(long, default_value = "")]
        series: String,
    },
    /// C-GET a series into a folder (checks first that it is in the study), as the nodes do.
    Get {
        #[arg(long)]
        study: String,
        #[arg(long)]
        series: String,
        /// Folder the images are written to (replaced when the retrieve is complete).
        #[arg(long)]
        out: PathBuf,
    },
    /// C-STORE DICOM files (e.g. a vessel_seg.dcm) to the PACS.
    Store {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// The PACS: the `pacs` block of a parameter file (default: config/vessel_segmentation.yaml
/// from NEEDLE_NAV_CONFIG_DIR), each key overridable here.
#[derive(Args, Debug)]
pub struct Connection {
    /// Parameter file whose `pacs` block to use (vessel_segmentation or trajectory_planner section).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Node section of --config to read (vessel_segmentation or trajectory_planner).
    #[arg(long, global = true, default_value = "vessel_segmentation")]
    pub node: String,
    #[arg(long, global = true)]
    pub host: Option<String>,
    #[arg(long, global = true)]
    pub port: Option<u16>,
    /// The PACS's AE title.
    #[arg(long, global = true)]
    pub called_ae_title: Option<String>,
    /// Our AE title.
    #[arg(long, global = true)]
    pub calling_ae_title: Option<String>,
    /// Longest wait for any one answer [s].
    #[arg(long, global = true)]
    pub timeout_s: Option<f64>,
    /// Connect with TLS, checking the PACS's certificate against this CA (PEM).
    #[arg(long, global = true)]
    pub tls_ca: Option<String>,
    /// Client certificate (PEM), with --tls-key.
    #[arg(long, global = true)]
    pub tls_cert: Option<String>,
    #[arg(long, global = true)]
    pub tls_key: Option<String>,
}

impl Connection {
    /// The configured PACS with the command line's overrides, validated.
    pub fn resolve(&self) -> Result<PacsConfig, String> {
        let mut pacs = match self.node.as_str() {
            "vessel_segmentation" => self.section::<VesselSegmentationConfig>()?.pacs,
            "trajectory_planner" => self.section::<TrajectoryPlannerConfig>()?.pacs,
            other => {
                return Err(format!(
                    "--node {other}: only vessel_segmentation and trajectory_planner have a pacs block"
                ))
            }
        };
        if let Some(h) = &self.host {
            pacs.host = h.clone();
        }
        if let Some(p) = self.port {
            pacs.port = p;
        }
        if let Some(t) = &self.called_ae_title {
            pacs.called_ae_title = t.clone();
        }
        if let Some(t) = &self.calling_ae_title {
            pacs.calling_ae_title = t.clone();
        }
        if let Some(t) = self.timeout_s {
            pacs.timeout_s = t;
        }
        if let Some(ca) = &self.tls_ca {
            pacs.tls.enabled = true;
            pacs.tls.ca_file = ca.clone();
        }
        if let Some(c) = &self.tls_cert {
            pacs.tls.client_cert_file = c.clone();
        }
        if let Some(k) = &self.tls_key {
            pacs.tls.client_key_file = k.clone();
        }
        pacs.validate().map_err(|(key, reason)| format!("{key}: {reason}"))?;
        if !pacs.is_configured() {
            return Err("no PACS: pacs.host is empty in the parameter file; give --host (and --port)".into());
        }
        Ok(pacs)
    }

    fn section<T>(&self) -> Result<T, String>
    where
        T: serde::de::DeserializeOwned + cfgmod::Validate,
    {
        match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let section =
                    cfgmod::node_section(&text, &self.node).map_err(|e| format!("{}: {e}", file.display()))?;
                cfgmod::build_config(&self.node, section, &Vec::new()).map_err(|e| format!("{}: {e}", file.display()))
            }
            None => cfgmod::load::<T>(&self.node, &Vec::new()).map(|(c, _)| c).map_err(|e| e.to_string()),
        }
    }
}

/// Runs the action; exit status 0: done, 1: the PACS said no or could not be reached, 2: bad arguments.
pub fn run(args: PacsArgs) -> ExitCode {
    let pacs = match args.connection.resolve() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let failed = |e: needle_nav_pacs::PacsError| {
        eprintln!("{e}");
        ExitCode::from(1)
    };
    match args.action {
        PacsAction::Echo => match needle_nav_pacs::echo(&pacs) {
            Ok(t) => {
                println!("C-ECHO {}: success in {:.1} ms", pacs.address(), t.as_secs_f64() * 1000.0);
                ExitCode::SUCCESS
            }
            Err(e) => failed(e),
        },
        PacsAction::Find { study, series } => {
            if study.is_empty() && series.is_empty() {
                eprintln!("give --study and/or --series");
                return ExitCode::from(2);
            }
            match needle_nav_pacs::find_series(&pacs, &study, &series) {
                Ok(found) if found.is_empty() => {
                    eprintln!("no matching series in {}", pacs.address());
                    ExitCode::from(1)
                }
                Ok(found) => {
                    println!("study\tseries\tmodality\tnumber\timages\tdescription");
                    for s in found {
                        let images = s.instances.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                        println!(
                            "{}\t{}\t{}\t{}\t{images}\t{}",
                            s.study_instance_uid, s.series_instance_uid, s.modality, s.number, s.description
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
        PacsAction::Get { study, series, out } => match needle_nav_pacs::get_series(&pacs, &study, &series, &out) {
            Ok(got) => {
                println!("{} image(s) into {} in {:.1} s", got.files.len(), got.folder.display(), got.seconds);
                ExitCode::SUCCESS
            }
            Err(e) => failed(e),
        },
        PacsAction::Store { files } => {
            for f in files {
                match needle_nav_pacs::store_file(&pacs, &f) {
                    Ok(s) => {
                        let warning = s.warning.map(|w| format!(" (warning: {w})")).unwrap_or_default();
                        println!("stored {} ({}) to {}{warning}", f.display(), s.sop_instance_uid, pacs.address());
                    }
                    Err(e) => return failed(e),
                }
            }
            ExitCode::SUCCESS
        }
    }
}
