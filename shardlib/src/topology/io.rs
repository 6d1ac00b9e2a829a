//! Reading and writing topologies as JSON and TOML.

use std::path::Path;

use super::{Topology, TopologyError};

impl Topology {
    /// Parses a JSON document and validates it.
    pub fn from_json(text: &str) -> Result<Self, TopologyError> {
        let topology: Topology =
            serde_json::from_str(text).map_err(|e| TopologyError::Parse { format: "json", message: e.to_string() })?;
        topology.validate()?;
        Ok(topology)
    }

    /// Parses a TOML document and validates it.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let topology: Topology = toml::from_str(text)
            .map_err(|e| TopologyError::Parse { format: "toml", message: e.to_string().trim_end().to_owned() })?;
        topology.validate()?;
        Ok(topology)
    }

    /// Reads and validates a topology file: TOML if its name ends in
    /// `.toml`, JSON otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TopologyError::Io { path: path.display().to_string(), message: e.to_string() })?;
        let parsed = if path.extension().is_some_and(|ext| ext == "toml") {
            Topology::from_toml(&text)
        } else {
            Topology::from_json(&text)
        };
        parsed.map_err(|e| match e {
            TopologyError::Parse { format, message } => {
                TopologyError::Parse { format, message: format!("{}: {message}", path.display()) }
            }
            other => other,
        })
    }

    /// The topology as pretty-printed JSON. DSNs are written in full: this is
    /// for storage, not for display.
    pub fn to_json(&self) -> Result<String, TopologyError> {
        serde_json::to_string_pretty(self)
            .map_err(|e| TopologyError::Serialize { format: "json", message: e.to_string() })
    }

    /// The topology as TOML. DSNs are written in full: this is for storage,
    /// not for display.
    pub fn to_toml(&self) -> Result<String, TopologyError> {
        toml::to_string(self).map_err(|e| TopologyError::Serialize { format: "toml", message: e.to_string() })
    }
}
