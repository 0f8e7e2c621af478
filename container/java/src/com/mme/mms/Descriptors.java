package com.mme.mms;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import com.sun.management.UnixOperatingSystemMXBean;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.OperatingSystemMXBean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The file descriptors a registered model costs this JVM, and a load that would not fit in them.
 *
 * <p>MMS keeps, per model, the three pipes of its backend's (our launcher's) stdio and its connection to
 * the backend's socket: at 5,000 models that is the whole of a 20,000 nofile limit. MMS never writes to a
 * backend's stdin, so it is closed once the backend is up (a model reading stdin meets EOF, as under
 * `docker run` without -i): three per model.
 *
 * <p>When the descriptors do run short, Runtime.exec or the backend's connection fails and MMS waits out
 * its backend start-up timeout (60 s) before answering 500. A load is refused up front instead, with 507
 * (SageMaker then unloads models and retries), while fewer than RESERVE descriptors would remain. The
 * zygote holds as many per hosted model as this JVM (its launcher connection, the model's socket, its copy of
 * MMS's connection) and fewer of its own, so this check trips first.
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
        if (room < PER_LOAD) {
            REFUSED.incrementAndGet();
            return "Insufficient file descriptors: "
                    + open
                    + " of the model server's "
                    + max
                    + " are open; unload models to load more";
        }
        loadsBeforeCount = room / PER_LOAD - 1;
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
