use clap::Parser;

use collapse_lab::cli::{execute, exit_code, Cli};

// candle allocates for every op on the CPU; mimalloc makes training ~1.6× faster here, and
// keeping large blocks for the next step spares the kernel re-zeroing their pages.
#[global_allocator]
static GLOBAL: collapse_lab::block_cache::BlockCache<mimalloc::MiMalloc> =
    collapse_lab::block_cache::BlockCache::new(mimalloc::MiMalloc);

fn main() {
    let cli = Cli::parse();
    if let Err(err) = execute(cli) {
        // Bad input: one line naming the file/flag and field. Anything else: the full chain.
        let code = exit_code(&err);
        if code == 2 {
            match err
                .chain()
                .find_map(|e| e.downcast_ref::<collapse_lab::config::InputError>())
            {
                Some(input) => eprintln!("error: {input}"),
                None => eprintln!("error: {err}"),
            }
        } else {
            eprintln!("error: {err:#}");
        }
        std::process::exit(code);
    }
}
