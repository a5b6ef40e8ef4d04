//! Reading the input files (errors name the file) and writing results
//! atomically, so a failed run never leaves a partial file behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ballast_solver::{LoadMatrix, Plan, Topology};

use super::error::{CliError, Problem};

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::new(path, Problem::Read(e)))
}

/// A topology file, or a plan document the service served (`GET
/// .../plans/latest`), which carries its topology under `topology`: an
/// operator holding a served plan need not fetch the topology apart.
pub fn read_topology(path: &Path) -> Result<Topology, CliError> {
    let text = read_text(path)?;
    let embedded = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|mut doc| match doc.get("num_layers") {
            Some(_) => None,
            None => doc.get_mut("topology").map(serde_json::Value::take),
        });
    let parsed = match embedded {
        Some(topology) => Topology::from_json(&topology.to_string()),
        None => Topology::from_json(&text),
    };
    parsed.map_err(|e| CliError::new(path, Problem::Parse(e)))
}

/// A load file: CSV when the name ends in `.csv` (any case), JSON otherwise.
pub fn read_load(path: &Path, topology: &Topology) -> Result<LoadMatrix, CliError> {
    let text = read_text(path)?;
    let is_csv = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"));
    let parsed = if is_csv {
        LoadMatrix::from_csv(&text, topology)
    } else {
        LoadMatrix::from_json(&text, topology)
    };
    parsed.map_err(|e| CliError::new(path, Problem::Parse(e)))
}

pub fn read_plan(path: &Path, topology: &Topology) -> Result<Plan, CliError> {
    Plan::from_json(&read_text(path)?, topology).map_err(|e| CliError::new(path, Problem::Parse(e)))
}

/// Writes `contents` to a temporary file beside `path`, then renames it into
/// place: readers see the old file or the whole new one, never a mix.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::new(path, Problem::Write(e));
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // 0666 before the umask (0644 under the usual 022), as a plain `create`
    // would make it: engines often run as another user or in a container
    // and must read the plan. tempfile's default is 0600.
    let mut file = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
        "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#;

    #[test]
    fn load_format_follows_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let topology = Topology::from_json(TOPOLOGY).unwrap();
        let csv = dir.path().join("load.CSV");
        std::fs::write(&csv, "1,2,3,4\n5,6,7,8\n").unwrap();
        let json = dir.path().join("load.json");
        std::fs::write(&json, r#"{"load": [[1,2,3,4],[5,6,7,8]]}"#).unwrap();
        assert_eq!(
            read_load(&csv, &topology).unwrap(),
            read_load(&json, &topology).unwrap()
        );
        // CSV text under a JSON name is a JSON error that names the file.
        std::fs::write(&json, "1,2,3,4\n5,6,7,8\n").unwrap();
        let err = read_load(&json, &topology).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: malformed load JSON", json.display())),
            "{err}"
        );
    }

    #[test]
    fn a_served_plan_gives_its_topology() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("served.json");
        let doc = format!(r#"{{"version": 3, "phy2log": [[0]], "topology": {TOPOLOGY}}}"#);
        std::fs::write(&plan, doc).unwrap();
        assert_eq!(
            read_topology(&plan).unwrap(),
            Topology::from_json(TOPOLOGY).unwrap()
        );
        // A plan without one still says what a topology needs.
        std::fs::write(&plan, r#"{"phy2log": [[0]]}"#).unwrap();
        let err = read_topology(&plan).unwrap_err().to_string();
        assert!(err.contains("num_layers"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plan.json");
        std::fs::write(&out, "old").unwrap();
        write_atomically(&out, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/plan.json");
        let err = write_atomically(&missing, "x").unwrap_err();
        assert_eq!(err.exit_code(), 1);
    }
}
