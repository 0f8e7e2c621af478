package com.mme.mms;

import com.amazonaws.ml.mms.metrics.Metric;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.WorkerLifeCycle;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Scanner;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads a spare launcher's stdout or stderr as MMS's WorkerLifeCycle.ReaderThread does (its lines in
 * MMS's log, "[METRICS]" lines to the model metrics), but is started with the spare: starting a thread
 * costs ~0.5-0.7 ms on this machine, and MMS starts two per load. The stdout reader starts reading once
 * the model's start has been read (SpareLifeCycle).
 */
final class SpareOutput extends Thread {

    private static final Logger logger = LoggerFactory.getLogger(WorkerLifeCycle.class); // MMS's lines' logger
    private static final Logger metrics = LoggerFactory.getLogger(ConfigManager.MODEL_METRICS_LOGGER);

    private final InputStream in;
    private final boolean error;
    /** stdout: read first by the thread starting the model, up to "MMS worker started." (SpareLifeCycle). */
    private final CountDownLatch handedOver;
    private volatile SpareLifeCycle owner;
    private volatile boolean running = true;

    SpareOutput(InputStream in, boolean error, int number) {
        super("mme-spare-" + number + (error ? "-stderr" : "-stdout"));
        this.in = in;
        this.error = error;
        this.handedOver = new CountDownLatch(error ? 0 : 1);
        setDaemon(true);
    }

    /** From now on the lines are the model's: named as MMS names its readers' threads. */
    void adopt(SpareLifeCycle lifeCycle, String threadName) {
        owner = lifeCycle;
        setName(threadName + (error ? "-stderr" : "-stdout"));
    }

    /** The stream is this thread's to read from here on. */
    void handOver() {
        handedOver.countDown();
    }

    /** One line as MMS's reader handles it: to the model metrics or MMS's log; true if it is the start. */
    static boolean handle(String line, boolean error, SpareLifeCycle lifeCycle) {
        if (line.startsWith("[METRICS]")) {
            metrics.info("{}", Metric.parse(line.substring(9)));
            return false;
        }
        if (lifeCycle != null && line.startsWith("[PID]")) {
            try {
                lifeCycle.setPid(Integer.parseInt(line.substring("[PID]".length()).trim()));
            } catch (NumberFormatException e) {
                // MMS's reader would end on it; a pid is only shown
            }
        }
        if (error) {
            logger.warn(line);
        } else {
            logger.info(line);
        }
        return "MMS worker started.".equals(line);
    }

    void terminate() {
        running = false;
    }

    @Override
    public void run() {
        try {
            handedOver.await();
        } catch (InterruptedException e) {
            return;
        }
        try (Scanner scanner = new Scanner(in, StandardCharsets.UTF_8)) {
            while (running && scanner.hasNext()) {
                handle(scanner.nextLine(), error, owner);
            }
        } catch (RuntimeException e) {
            logger.error("Couldn't read {}", getName(), e);
        } finally {
            try {
                in.close();
            } catch (IOException e) {
                logger.error("Failed to close stream for thread {}", getName(), e);
            }
        }
    }
}
