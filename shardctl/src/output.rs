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
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
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
