//! Printing results: aligned tables for people, JSON for programs.

use std::io::{self, Write};

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};

/// Whether an error is a closed output pipe (`shardctl … | head`), which is
/// not a failure of the command.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|cause| cause.downcast_ref::<io::Error>()).any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// A table with a header row; numeric columns are right-aligned.
pub struct TextTable {
    table: Table,
}

impl TextTable {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().map(|h| h.to_uppercase()));
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
        TextTable { table }
    }

    /// Right-aligns column `index` (numbers read best that way).
    pub fn align_right(&mut self, index: usize) -> &mut Self {
        if let Some(column) = self.table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        self
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.table.add_row(cells);
    }

    /// Prints the table to `out`.
    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        for line in self.table.lines() {
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Streams a JSON array one element at a time, so that large outputs need
/// no buffering.
pub struct JsonArrayWriter<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> JsonArrayWriter<W> {
    /// Opens the array.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"[")?;
        Ok(JsonArrayWriter { out, first: true })
    }

    /// Writes one element.
    pub fn element(&mut self, value: &impl serde::Serialize) -> io::Result<()> {
        self.out.write_all(if self.first { b"\n  " } else { b",\n  " })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)
    }

    /// Closes the array and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.write_all(if self.first { b"]\n" } else { b"\n]\n" })?;
        self.out.flush()
    }
}

/// Colors for terminal output, or none.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// Colors on `always`; on `auto` only for a terminal without NO_COLOR.
    pub fn new(choice: crate::cli::ColorChoice) -> Self {
        use std::io::IsTerminal;
        let enabled = match choice {
            crate::cli::ColorChoice::Always => true,
            crate::cli::ColorChoice::Never => false,
            crate::cli::ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && io::stdout().is_terminal()
            }
        };
        Palette { enabled }
    }

    /// `text` in green (good states: leader, serving, ready).
    pub fn good(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Green, text)
    }

    /// `text` in yellow (transitions: draining, frozen, follower).
    pub fn warn(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Yellow, text)
    }

    /// `text` in red (bad states: removed, no leader).
    pub fn bad(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Red, text)
    }

    /// A state word colored by what it means.
    pub fn state(&self, state: &str) -> String {
        match state {
            "serving" | "leader" | "ready" | "yes" | "succeeded" => self.good(state),
            "draining" | "frozen" | "follower" | "cancelling" | "cancelled" => self.warn(state),
            "removed" | "none" | "no" | "failed" => self.bad(state),
            other => other.to_owned(),
        }
    }

    fn paint(&self, color: anstyle::AnsiColor, text: &str) -> String {
        if !self.enabled {
            return text.to_owned();
        }
        let style = anstyle::Style::new().fg_color(Some(color.into()));
        format!("{}{text}{}", style.render(), style.render_reset())
    }
}

/// Prints a JSON value, pretty, with a final newline.
pub fn print_json(out: &mut impl Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)
}
