package com.mme.mms;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import com.sun.management.UnixOperatingSystemMXBean;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.OperatingSystemMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.stream.Stream;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The file descriptors a registered model costs this JVM and the zygote, and a load that would not fit.
 *
 * <p>MMS keeps, per model, the three pipes of its backend's (our launcher's) stdio and its connection to
 * the backend's socket: at 5,000 models that is the whole of a 20,000 nofile limit. MMS never writes to a
 * backend's stdin, so it is closed once the backend is up (a model reading stdin meets EOF, as under
 * `docker run` without -i). A model served by a shared host also lets its launcher's stdout and stderr go
 * (the zygote tells the launcher): MMS's readers meet EOF and close theirs. The zygote holds three per
 * model (its launcher's connection, the model's socket, its copy of MMS's connection).
 *
 * <p>When the descriptors do run short, Runtime.exec, the backend's connection or the zygote's accept
 * fails and MMS waits out its backend start-up timeout (60 s) before answering 500. A load is refused up
 * front instead, with 507 (SageMaker then unloads models and retries), while fewer than RESERVE
 * descriptors would remain in this JVM or in the zygote (its pid: `zygote-pid` in the state directory).
 */
final class Descriptors {

    private static final Logger logger = LoggerFactory.getLogger(Descriptors.class);
    /** Kept free for HTTP connections, log files and the loads already in flight. */
    static final long RESERVE = 256;
    /** A bound on what one more model takes here (3 pipes and a socket; transiently a few more). */
    private static final long PER_LOAD = 8;
    static final AtomicLong REFUSED = new AtomicLong();
    static final AtomicLong STDIN_CLOSED = new AtomicLong();
    /** Loads that fit without counting again: the last count left room for this many (unloads only free). */
    private static long loadsBeforeCount;

    private Descriptors() {}

    /** Why one more model's backend would not fit in this JVM's descriptors, or null. */
    static synchronized String shortage() {
        if (loadsBeforeCount > 0) {
            loadsBeforeCount--;
            return null;
        }
        OperatingSystemMXBean bean = ManagementFactory.getOperatingSystemMXBean();
        if (!(bean instanceof UnixOperatingSystemMXBean)) {
            return null;
        }
        UnixOperatingSystemMXBean os = (UnixOperatingSystemMXBean) bean;
        long max = os.getMaxFileDescriptorCount();
        long open = os.getOpenFileDescriptorCount(); // lists /proc/self/fd: hence counted only now and then
        long room = max - open - RESERVE;
        String who = "the model server";
        long[] zygote = zygoteCount();
        if (zygote != null && zygote[1] - zygote[0] - RESERVE < room) {
            max = zygote[1];
            open = zygote[0];
            room = max - open - RESERVE;
            who = "the zygote";
        }
        if (room < PER_LOAD) {
            REFUSED.incrementAndGet();
            return "Insufficient file descriptors: "
                    + open
                    + " of "
                    + who
                    + "'s "
                    + max
                    + " are open; unload models to load more";
        }
        loadsBeforeCount = room / PER_LOAD - 1;
        return null;
    }

    /** The zygote's open descriptors and its limit, or null (no zygote: MME_BACKEND=vanilla). */
    private static long[] zygoteCount() {
        String dir = System.getenv("_MME_STATE_DIR");
        if (dir == null) {
            return null;
        }
        try {
            String pid = Files.readString(Paths.get(dir, "zygote-pid")).trim();
            long open;
            try (Stream<Path> fds = Files.list(Paths.get("/proc", pid, "fd"))) {
                open = fds.count();
            }
            for (String line : Files.readAllLines(Paths.get("/proc", pid, "limits"))) {
                if (line.startsWith("Max open files")) {
                    String[] parts = line.substring("Max open files".length()).trim().split("\\s+");
                    return new long[] {open, Long.parseLong(parts[0])}; // the soft limit
                }
            }
        } catch (IOException | RuntimeException e) {
            logger.debug("cannot count the zygote's descriptors: {}", e.toString());
        }
        return null;
    }

    /** The model's backend is up: close its stdin, which MMS never writes (one descriptor per model). */
    static void closeBackendStdin(Model model) {
        WorkerThread server = model.getServerThread();
        Process process = server == null ? null : server.getLifeCycle().getProcess();
        if (process == null) {
            return;
        }
        try {
            OutputStream stdin = process.getOutputStream();
            stdin.close();
            STDIN_CLOSED.incrementAndGet();
        } catch (IOException e) {
            logger.warn("cannot close model {}'s backend stdin: {}", model.getModelName(), e.toString());
        }
    }

    /** Answered 507 by MMS's request handler (it maps OutOfMemoryError so), with this message. */
    static final class Exhausted extends OutOfMemoryError {
        private static final long serialVersionUID = 1L;

        Exhausted(String message) {
            super(message);
        }
    }
}
