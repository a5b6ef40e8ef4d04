//! Where replayed windows come from: a trace file, a directory of load
//! matrices, an engine's own statistics (read whole, as `ballast import`
//! reads them), or a cluster's stored history (its database, or a running
//! service's API). Each yields windows one at a time, already parsed
//! against the topology, and names the file and line at fault.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use ballast_protocol::TraceWindow;
use ballast_solver::{LoadMatrix, ParseError, Topology};

use super::ReplayArgs;
use crate::cli::error::{CliError, Problem};
use crate::cli::{import, io};
use crate::history::{self, History, HistoryError, Span};

/// An open source of windows.
pub struct Source {
    topology: Topology,
    kind: Kind,
}

enum Kind {
    Trace {
        path: PathBuf,
        lines: Lines<BufReader<File>>,
        line: usize,
        bytes: u64,
        read: u64,
    },
    Loads {
        files: Vec<PathBuf>,
        next: usize,
    },
    Engine {
        path: PathBuf,
        windows: Vec<Vec<Vec<u64>>>,
        next: usize,
    },
    Stored {
        label: String,
        windows: Box<dyn Iterator<Item = Result<TraceWindow, HistoryError>> + Send>,
        read: u64,
    },
}

impl Source {
    pub fn open(args: &ReplayArgs) -> Result<Source, CliError> {
        if let Some(url) = &args.database_url {
            let cluster = required_cluster(args)?;
            let history = history::from_database(url, cluster, span(args)?)
                .map_err(|e| CliError::without_file(Problem::History(e)))?;
            return Ok(Source::stored(
                history,
                format!("cluster {cluster} (database)"),
            ));
        }
        if let Some(url) = &args.service {
            let cluster = required_cluster(args)?;
            let history = history::from_service(url, cluster, args.token.as_deref(), span(args)?)
                .map_err(|e| CliError::without_file(Problem::History(e)))?;
            return Ok(Source::stored(
                history,
                format!("cluster {cluster} at {url}"),
            ));
        }
        let topology_path = args.topology.as_deref().ok_or_else(|| {
            flag(
                "--topology",
                "is required with --trace, --loads, --sglang or --trtllm",
            )
        })?;
        let topology = io::read_topology(topology_path)?;
        if let Some(path) = args.engine.path() {
            let steps = args
                .window
                .ok_or_else(|| flag("--window", "is required with --sglang or --trtllm"))?;
            let windows = import::read(&args.engine, &topology)?.windows(steps.get());
            return Ok(Source {
                topology,
                kind: Kind::Engine {
                    path: path.to_path_buf(),
                    windows,
                    next: 0,
                },
            });
        }
        if args.window.is_some() {
            return Err(flag("--window", "is only for --sglang or --trtllm"));
        }
        let kind = if let Some(path) = &args.trace {
            let file = File::open(path).map_err(|e| CliError::new(path, Problem::Read(e)))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            Kind::Trace {
                path: path.clone(),
                lines: BufReader::new(file).lines(),
                line: 0,
                bytes,
                read: 0,
            }
        } else if let Some(dir) = &args.loads {
            Kind::Loads {
                files: load_files(dir)?,
                next: 0,
            }
        } else {
            return Err(flag(
                "--trace",
                "or --loads, --sglang, --trtllm, --database-url, --service is required",
            ));
        };
        Ok(Source { topology, kind })
    }

    fn stored(history: History, label: String) -> Source {
        Source {
            topology: history.topology,
            kind: Kind::Stored {
                label,
                windows: history.windows,
                read: 0,
            },
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// What progress is counted in, when known: bytes of a trace, files of
    /// a directory.
    pub fn len_hint(&self) -> Option<u64> {
        match &self.kind {
            Kind::Trace { bytes, .. } => Some(*bytes),
            Kind::Loads { files, .. } => Some(files.len() as u64),
            Kind::Engine { windows, .. } => Some(windows.len() as u64),
            Kind::Stored { .. } => None,
        }
    }

    /// Progress so far, in the unit of [`Source::len_hint`] (windows when
    /// there is none).
    pub fn position(&self) -> u64 {
        match &self.kind {
            Kind::Trace { read, .. } => *read,
            Kind::Loads { next, .. } | Kind::Engine { next, .. } => *next as u64,
            Kind::Stored { read, .. } => *read,
        }
    }

    /// The source, for people.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Trace { path, .. } | Kind::Engine { path, .. } => path.display().to_string(),
            Kind::Loads { files, .. } => match files.first().and_then(|f| f.parent()) {
                Some(dir) => dir.display().to_string(),
                None => "a load directory".to_owned(),
            },
            Kind::Stored { label, .. } => label.clone(),
        }
    }

    /// An error about the windows read so far, naming the source.
    pub fn blame(&self, problem: Problem) -> CliError {
        match &self.kind {
            Kind::Trace { path, .. } | Kind::Engine { path, .. } => CliError::new(path, problem),
            Kind::Loads { files, next } => match next.checked_sub(1).and_then(|i| files.get(i)) {
                Some(file) => CliError::new(file, problem),
                None => CliError::without_file(problem),
            },
            Kind::Stored { .. } => CliError::without_file(problem),
        }
    }

    /// The next window: its index and load.
    pub fn next_window(&mut self) -> Option<Result<(u64, LoadMatrix), CliError>> {
        let topology = &self.topology;
        match &mut self.kind {
            Kind::Trace {
                path,
                lines,
                line,
                read,
                ..
            } => loop {
                *line += 1;
                let text = match lines.next()? {
                    Ok(text) => text,
                    Err(e) => return Some(Err(CliError::new(path, Problem::Read(e)))),
                };
                *read += text.len() as u64 + 1;
                if text.trim().is_empty() {
                    continue;
                }
                return Some(trace_window(topology, &text).map_err(|(window, detail)| {
                    CliError::new(
                        path,
                        Problem::Trace {
                            line: *line,
                            window,
                            detail,
                        },
                    )
                }));
            },
            Kind::Loads { files, next } => {
                let file = files.get(*next)?;
                let index = *next as u64;
                *next += 1;
                Some(io::read_load(file, topology).map(|load| (index, load)))
            }
            Kind::Engine {
                path,
                windows,
                next,
            } => {
                let rows = windows.get(*next)?;
                let index = *next as u64;
                *next += 1;
                Some(
                    import::to_load(rows, topology)
                        .map(|load| (index, load))
                        .map_err(|e| CliError::new(path, Problem::Parse(e))),
                )
            }
            Kind::Stored { windows, read, .. } => {
                let window = windows.next()?;
                *read += 1;
                Some(
                    window
                        .map_err(|e| CliError::without_file(Problem::History(e)))
                        .and_then(|w| {
                            let index = w.window;
                            trace_load(w, topology)
                                .map(|load| (index, load))
                                .map_err(|e| {
                                    CliError::without_file(Problem::Trace {
                                        line: *read as usize,
                                        window: Some(index),
                                        detail: e.to_string(),
                                    })
                                })
                        }),
                )
            }
        }
    }
}

/// One trace line, parsed; on error the window (when it got that far) and
/// what is wrong.
fn trace_window(
    topology: &Topology,
    text: &str,
) -> Result<(u64, LoadMatrix), (Option<u64>, String)> {
    let window: TraceWindow = serde_json::from_str(text).map_err(|e| {
        (
            None,
            format!("not a trace window ({{\"window\": i, \"load\": [[..]]}}): {e}"),
        )
    })?;
    let index = window.window;
    trace_load(window, topology)
        .map(|load| (index, load))
        .map_err(|e: ParseError| (Some(index), e.to_string()))
}

/// A trace window's load, with its co-visit counts when it carries them.
fn trace_load(window: TraceWindow, topology: &Topology) -> Result<LoadMatrix, ParseError> {
    let load = LoadMatrix::new(window.load, topology)?;
    match window.covisit {
        Some(covisit) => load.with_covisit(covisit, topology),
        None => Ok(load),
    }
}

/// The load files of a directory (`.json` and `.csv`), by name.
fn load_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::new(dir, Problem::Read(e)))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| CliError::new(dir, Problem::Read(e)))?
            .path();
        let is_load = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json") || ext.eq_ignore_ascii_case("csv"));
        if is_load && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn required_cluster(args: &ReplayArgs) -> Result<&str, CliError> {
    args.cluster
        .as_deref()
        .ok_or_else(|| flag("--cluster", "is required with --database-url or --service"))
}

fn span(args: &ReplayArgs) -> Result<Span, CliError> {
    Span::parse(args.since.as_deref(), args.until.as_deref())
        .map_err(|e| flag("--since/--until", e))
}

fn flag(name: &str, problem: impl ToString) -> CliError {
    CliError::without_file(Problem::Flag(format!("{name}: {}", problem.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 2}"#,
        )
        .unwrap()
    }

    #[test]
    fn trace_lines_carry_covisit_when_present() {
        let t = topology();
        let (index, load) = trace_window(
            &t,
            r#"{"window": 4, "load": [[3, 2]], "covisit": [[[3, 1], [0, 2]]]}"#,
        )
        .unwrap();
        assert_eq!(index, 4);
        assert_eq!(load.covisit_values(), Some(&[3.0, 1.0, 0.0, 2.0][..]));
        let (_, bare) = trace_window(&t, r#"{"window": 5, "load": [[3, 2]]}"#).unwrap();
        assert!(!bare.has_covisit());
        // A count above its expert's load is refused, naming the window.
        let (window, why) = trace_window(
            &t,
            r#"{"window": 6, "load": [[3, 2]], "covisit": [[[3, 1], [0, 5]]]}"#,
        )
        .unwrap_err();
        assert_eq!(window, Some(6));
        assert!(why.contains("covisit"), "{why}");
    }
}
