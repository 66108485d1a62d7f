//! Sans-IO SMTP: command lines, commands, replies and the DATA receiver. Nothing here
//! touches a socket or tokio, so every part is tested with plain byte slices.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod line;
pub mod reply;

pub use command::Command;
pub use data::{DataError, DataReceiver, LineEndings};
pub use line::{Line, LineSplitter};
pub use reply::{EnhancedCode, Reply};
