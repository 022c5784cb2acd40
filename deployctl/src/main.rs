fn main() {
    eprintln!("deployctl: not implemented yet");
    std::process::exit(2);
}
