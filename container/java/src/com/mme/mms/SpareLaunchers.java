package com.mme.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Launchers started ahead of the loads that will need them (container/launcher.c, "--spare").
 *
 * <p>MMS starts each model's backend with Runtime.exec when the load arrives: Java's preparation, the fork
 * and exec, the launcher's own start-up and two reader threads were ~4 ms of a ~13 ms cold load (bench
 * --load-breakdown). A spare has done all of that already and waits on its stdin; a load hands it the
 * very command and environment MMS would have run (SpareLifeCycle), and it registers with the zygote at
 * once. Another spare is started once the load is answered. No spare ready (a burst of loads): MMS's own
 * start, as before. _MME_SPARE_LAUNCHERS (serve: MME_SPARE_LAUNCHERS; 0 with the Python launcher or
 * vanilla MMS, which have no spare mode) is how many are kept.
 */
final class SpareLaunchers {

    private static final Logger logger = LoggerFactory.getLogger(SpareLaunchers.class);
    static final int SIZE = Math.max(0, ContainerMetrics.intEnv("_MME_SPARE_LAUNCHERS", 0));
    /** Room for the model's command in the spare's /proc/PID/cmdline (what ps and operators see). */
    private static final String ROOM = "_".repeat(2048);
    static final AtomicLong USED = new AtomicLong();
    static final AtomicLong MISSED = new AtomicLong();
    static final AtomicLong FAILED = new AtomicLong();
    private static final ConcurrentLinkedQueue<Spare> READY = new ConcurrentLinkedQueue<>();
    private static final AtomicLong STARTED = new AtomicLong();
    private static final ExecutorService STARTER =
            Executors.newSingleThreadExecutor(
                    r -> {
                        Thread t = new Thread(r, "mme-spare-launchers");
                        t.setDaemon(true);
                        return t;
                    });
    private static volatile boolean failedOnce;

    private SpareLaunchers() {}

    /** A spare that is still up, or null (none kept, or none ready yet); `counted`: in GET /mme's counts. */
    static Spare take(boolean counted) {
        if (SIZE == 0) {
            return null;
        }
        Spare spare;
        while ((spare = READY.poll()) != null) {
            if (spare.process.isAlive()) {
                if (counted) {
                    USED.incrementAndGet();
                }
                return spare;
            }
            spare.discard(); // died while it waited (an operator, the OOM killer)
        }
        if (counted) {
            MISSED.incrementAndGet();
        }
        refill();
        return null;
    }

    /**
     * Starts spares up to SIZE, in the background: called once a load has settled, so that starting a
     * process (Java's fork and exec, the launcher's start-up) does not take a CPU from the load itself.
     */
    static void refill() {
        for (int i = READY.size(); i < SIZE; i++) {
            STARTER.execute(SpareLaunchers::startOne);
        }
    }

    /** Spares waiting now. */
    static int ready() {
        return READY.size();
    }

    /** Tells a spare its model's command: argument count, arguments, environment count, entries, cwd. */
    static void hand(Process spare, String[] args, String[] envp, File cwd) throws IOException {
        ByteArrayOutputStream body = new ByteArrayOutputStream(4096);
        field(body, Integer.toString(args.length));
        for (String a : args) {
            field(body, a);
        }
        field(body, Integer.toString(envp.length));
        for (String e : envp) {
            field(body, e);
        }
        field(body, cwd.getPath());
        int n = body.size();
        OutputStream stdin = spare.getOutputStream();
        stdin.write(new byte[] {(byte) (n >>> 24), (byte) (n >>> 16), (byte) (n >>> 8), (byte) n});
        body.writeTo(stdin);
        stdin.flush();
    }

    private static void field(ByteArrayOutputStream out, String value) {
        out.writeBytes(value.getBytes(StandardCharsets.UTF_8));
        out.write(0);
    }

    private static void startOne() {
        if (READY.size() >= SIZE) {
            return;
        }
        ConfigManager config = ConfigManager.getInstance();
        try {
            ProcessBuilder builder =
                    new ProcessBuilder(config.getPythonExecutable(), "--spare", ROOM)
                            .directory(new File(config.getModelServerHome()));
            Process process = builder.start();
            int n = (int) STARTED.incrementAndGet();
            SpareOutput out = new SpareOutput(process.getInputStream(), false, n);
            SpareOutput err = new SpareOutput(process.getErrorStream(), true, n);
            out.start();
            err.start();
            READY.add(new Spare(process, out, err));
        } catch (IOException | RuntimeException e) {
            if (!failedOnce) {
                failedOnce = true; // loads start their launcher as MMS does; said once, not per load
                logger.warn("cannot start a spare launcher: {}", e.toString());
            }
        }
    }

    /** A launcher waiting for its model, and the threads already reading its stdout and stderr. */
    static final class Spare {
        final Process process;
        final SpareOutput out;
        final SpareOutput err;

        Spare(Process process, SpareOutput out, SpareOutput err) {
            this.process = process;
            this.out = out;
            this.err = err;
        }

        /** Ends it unused: its readers meet its output's end, its stdin is closed. */
        void discard() {
            process.destroyForcibly();
            out.terminate();
            err.terminate();
            out.handOver();
            try {
                process.getOutputStream().close();
            } catch (IOException e) {
                // gone with the process
            }
        }
    }
}
