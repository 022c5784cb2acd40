fn main() {
    eprintln!("sidecar: not implemented yet");
    std::process::exit(2);
}
