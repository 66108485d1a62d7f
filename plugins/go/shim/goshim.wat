;; The WASI preview1 functions Go's wasip1 runtime imports, for Go policy plugins. Used as
;; the `wasi_snapshot_preview1` adapter by `wasm-tools component new`. It never allocates
;; and keeps no state, so it is safe while Go's runtime initialises (the official adapter
;; is not: it allocates through the module's cabi_realloc before Go can serve it).
;; No arguments, no environment, no files: stdout and stderr go to the host log, clocks
;; read the monotonic clock, and sleeping returns at once.
(module
  (import "env" "memory" (memory 0))
  (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $now (result i64)))
  (import "wasi:random/random@0.2.0" "get-random-u64" (func $random (result i64)))
  (import "wasmta:policy/host@0.1.1" "log" (func $log (param i32 i32 i32)))

  ;; args and environment: none
  (func (export "args_sizes_get") (param $argc i32) (param $size i32) (result i32)
    (i32.store (local.get $argc) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))
  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "environ_sizes_get") (param $count i32) (param $size i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))
  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))

  ;; every clock is the monotonic clock (nanoseconds)
  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (i64.store (local.get $out) (call $now))
    (i32.const 0))

  ;; fill the buffer 8 bytes at a time, then byte by byte
  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $buf) (local.get $len)))
    (block $done
      (loop $words
        (br_if $done (i32.gt_u (i32.add (local.get $buf) (i32.const 8)) (local.get $end)))
        (i64.store (local.get $buf) (call $random))
        (local.set $buf (i32.add (local.get $buf) (i32.const 8)))
        (br $words)))
    (block $tail_done
      (loop $bytes
        (br_if $tail_done (i32.ge_u (local.get $buf) (local.get $end)))
        (i64.store8 (local.get $buf) (call $random))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (br $bytes)))
    (i32.const 0))

  ;; fd 1 logs at info, anything else (fd 2) at warn; level enum: trace debug info warn error
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $count i32) (param $written i32) (result i32)
    (local $total i32)
    (local $len i32)
    (block $done
      (loop $each
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $len (i32.load offset=4 (local.get $iovs)))
        (if (local.get $len)
          (then
            (call $log
              (select (i32.const 2) (i32.const 3) (i32.eq (local.get $fd) (i32.const 1)))
              (i32.load (local.get $iovs))
              (local.get $len))))
        (local.set $total (i32.add (local.get $total) (local.get $len)))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $each)))
    (i32.store (local.get $written) (local.get $total))
    (i32.const 0))

  ;; every subscription is ready at once (Go sleeps in its panic path)
  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $n i32) (param $events i32) (result i32)
    (local $i i32)
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        ;; event: userdata u64 @0, error u16 @8, type u8 @10, fd_readwrite @16
        (i64.store (local.get $out) (i64.load (local.get $in)))
        (i32.store16 offset=8 (local.get $out) (i32.const 0))
        (i32.store8 offset=10 (local.get $out) (i32.load8_u offset=8 (local.get $in)))
        (i64.store offset=16 (local.get $out) (i64.const 0))
        (i64.store offset=24 (local.get $out) (i64.const 0))
        (local.set $in (i32.add (local.get $in) (i32.const 48)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store (local.get $events) (local.get $n))
    (i32.const 0))

  (func (export "sched_yield") (result i32) (i32.const 0))

  ;; exit means the plugin gave up (a Go panic ends here): trap
  (func (export "proc_exit") (param i32) unreachable)
)
