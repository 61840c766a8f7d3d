// Command sbcd is the firmware daemon of the sbcd edge box, a SIP session
// border controller. It exists as the one place that knows every other
// package: it reads the flags, checks the config, builds the object graph,
// owns the process signals and turns the outcome into an exit code. Everything
// else lives in packages that cmd/sbcd wires together (DESIGN.md §1).
//
// Usage:
//
//	sbcd [-config FILE] [-log-level debug|info|warn|error] [-cpuprofile FILE]
//	sbcd check FILE
//	sbcd version
//
// -cpuprofile writes a CPU profile of the whole run (pprof format) to FILE
// when sbcd stops: for engineers measuring the call path (BENCHMARKS.md).
//
// Without -config, sbcd reads /data/sbcd.toml, else the image's
// /etc/sbcd/sbcd.toml, else its built-in defaults, which serve SIP on
// 127.0.0.1:5060 only (DESIGN.md §5).
//
// Signals:
//
//	SIGTERM, SIGINT  shut down cleanly and exit 0.
//	SIGUSR1          toggle the log level between debug and the -log-level
//	                 level (info when that is debug), without a restart.
//	SIGHUP           read the configuration file again and apply what can
//	                 change live; a bad file is logged and changes nothing.
//
// Environment: GOGC and GOMAXPROCS, when set, override what sbcd tunes for
// itself, as in any Go program: the garbage collector's headroom over its
// preallocated tables (gc.go) and the number of threads that run Go code,
// one until the load nears a core (procs.go).
//
// Exit codes: 0 on a clean shutdown (and for a valid file in `check`), 1
// when the daemon cannot start (for example an invalid config file, reported
// with every problem and its line), 2 for bad flags or usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"sbcd/platform/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is main without the process: it returns the exit code instead of
// exiting, and subscribes to the real process signals.
func run(args []string, stdout, stderr io.Writer) int {
	return runWith(args, stdout, stderr, osSignals)
}

// signals is what the daemon learns from the outside world while it runs.
type signals struct {
	// stop is done when the daemon must shut down (SIGTERM, SIGINT).
	stop context.Context
	// toggleDebug receives a value each time the log level must toggle
	// between debug and the configured level (SIGUSR1).
	toggleDebug <-chan os.Signal
	// reload receives a value each time the configuration must be read
	// again and applied (SIGHUP).
	reload <-chan os.Signal
}

// subscribeFunc starts delivering signals; release undoes the subscription.
// Tests pass their own to drive the daemon without real signals.
type subscribeFunc func() (s signals, release func())

// osSignals subscribes to the process signals.
func osSignals() (signals, func()) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	release := func() {
		signal.Stop(usr1)
		signal.Stop(hup)
		stop()
	}
	return signals{stop: ctx, toggleDebug: usr1, reload: hup}, release
}

// runWith parses the command line and runs the subcommand or the daemon.
func runWith(args []string, stdout, stderr io.Writer, subscribe subscribeFunc) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "check":
			if len(args) != 2 {
				fmt.Fprintln(stderr, "sbcd: usage: sbcd check FILE")
				return exitUsage
			}
			return check(args[1], stdout, stderr)
		case "version":
			if len(args) > 1 {
				fmt.Fprintf(stderr, "sbcd: version takes no arguments, got %q\n", args[1:])
				return exitUsage
			}
			fmt.Fprintf(stdout, "sbcd %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
			return exitOK
		default:
			fmt.Fprintf(stderr, "sbcd: unknown subcommand %q\n", args[0])
			usage(stderr, nil)
			return exitUsage
		}
	}

	fs := flag.NewFlagSet("sbcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr, fs) }
	configPath := fs.String("config", "", "read the configuration from `FILE` (default: built-in defaults)")
	level := slog.LevelInfo
	fs.Func("log-level", "log `level`: debug, info, warn or error (default info)", func(s string) error {
		l, err := parseLevel(s)
		if err != nil {
			return err
		}
		level = l
		return nil
	})
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (pprof format) to `FILE` when sbcd stops")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // the flag package has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sbcd: unexpected argument %q\n", fs.Arg(0))
		usage(stderr, fs)
		return exitUsage
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "sbcd: %v\n", err)
			return exitError
		}
		defer func() {
			if err := stop(); err != nil {
				fmt.Fprintf(stderr, "sbcd: %v\n", err)
			}
		}()
	}

	cfg, path, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "sbcd: config rejected: %v\n", err)
		return exitError
	}
	return daemon(cfg, paths{flag: *configPath, loaded: path}, level, stderr, subscribe)
}

// startCPUProfile starts profiling into a new file at path; stop ends the
// profile and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return nil
	}, nil
}

// paths are the configuration files the daemon knows of.
type paths struct {
	flag   string // -config FILE, "" when not given
	loaded string // the file the configuration came from, "" for the built-in defaults
}

// save is where an uploaded configuration is written: the -config file
// when given, else /data/sbcd.toml (DESIGN.md §5), which the next start
// reads before the image's file.
func (p paths) save() string {
	if p.flag != "" {
		return p.flag
	}
	return config.SavedPath
}

// daemon runs until stop is done. It logs to stderr through one root logger
// whose level can change at run time.
func daemon(cfg *config.Config, files paths, level slog.Level, stderr io.Writer, subscribe subscribeFunc) int {
	var lv slog.LevelVar
	lv.Set(level)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &lv}))

	// Subscribe before announcing readiness, so that a signal sent right
	// after the "running" line is never lost or fatal.
	sig, release := subscribe()
	defer release()

	log.Info("sbcd starting", "version", version, "platform", runtime.GOOS+"/"+runtime.GOARCH,
		"go", runtime.Version(), "pid", os.Getpid(), "log_level", lv.Level())
	if files.loaded == "" {
		log.Info("no config file found: using the built-in defaults", "searched", []string{config.SavedPath, config.ImagePath})
	} else {
		log.Info("config loaded", "config", files.loaded)
	}
	log.Info("running: SIGTERM or SIGINT stops, SIGHUP reloads the config, SIGUSR1 toggles debug logging")

	// The log level toggles for as long as the daemon runs.
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-sig.toggleDebug:
				next := slog.LevelDebug
				if lv.Level() == slog.LevelDebug {
					next = level
					if next == slog.LevelDebug {
						next = slog.LevelInfo
					}
				}
				lv.Set(next)
				log.Info("log level changed", "log_level", next)
			}
		}
	}()

	return serve(cfg, files, log, sig.reload, sig.stop.Done(), func() {
		log.Info("shutting down", "cause", context.Cause(sig.stop))
	})
}

// parseLevel accepts exactly the four level names, in any case.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// usage prints the command summary, and the flags when fs is not nil.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage:
  sbcd [-config FILE] [-log-level debug|info|warn|error] [-cpuprofile FILE]
                                                           run the daemon
  sbcd version                                             print the version
`)
	if fs != nil {
		fmt.Fprintln(w, "flags:")
		fs.PrintDefaults()
	}
}
