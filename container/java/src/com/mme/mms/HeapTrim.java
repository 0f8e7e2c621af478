package com.mme.mms;

import java.util.concurrent.TimeUnit;

/**
 * Gives the Java front's unused heap back to the machine once activity (invokes, loads, unloads) has
 * been quiet for QUIET_MS: one full collection (System.gc(), which shrinks G1's heap to
 * MaxHeapFreeRatio), then nothing until the next activity.
 *
 * <p>It replaces G1's periodic collection (G1PeriodicGCInterval), which ran a full collection every 3 s
 * of GC-idleness for ever: 100-400 ms each with 1,000 models loaded (thousands of threads' stacks to
 * scan), so that an idle container spent several percent of a core on them and a /metrics scrape had
 * one chance in ten to wait for one. Now a scrape meets one only in the seconds after a burst ends.
 */
final class HeapTrim {

    static final long QUIET_MS = Long.getLong("mme.heapTrimQuietMs", 3000);
    private static volatile long lastNanos;
    private static volatile boolean dirty;
    private static volatile long trims;

    private HeapTrim() {}

    /** Something happened that may have left garbage or grown the heap (on the event loop: no locks). */
    static void note() {
        lastNanos = System.nanoTime();
        if (!dirty) {
            dirty = true;
        }
    }

    static long trims() {
        return trims;
    }

    static void start() {
        if (QUIET_MS <= 0) {
            return;
        }
        Thread t = new Thread(HeapTrim::run, "mme-heap-trim");
        t.setDaemon(true);
        t.start();
    }

    private static void run() {
        long tick = Math.min(1000, QUIET_MS);
        try {
            while (true) {
                Thread.sleep(tick);
                if (dirty && System.nanoTime() - lastNanos >= TimeUnit.MILLISECONDS.toNanos(QUIET_MS)) {
                    dirty = false;
                    synchronized (MetricsText.class) { // never in the middle of a scrape's render
                        System.gc();
                    }
                    trims++;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
