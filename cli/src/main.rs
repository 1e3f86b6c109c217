//! `zodbrs`: one binary for migrating and operating ZODB databases.

fn main() -> anyhow::Result<()> {
    Ok(())
}
