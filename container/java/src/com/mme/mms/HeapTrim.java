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
 * one chance in ten to wait for one. Now there is one collection per burst, and where /metrics is being
 * scraped it waits for the next scrape's answer (at most a minute) and runs right after it, as far as
 * can be from the scrape after.
 */
final class HeapTrim {

    static final long QUIET_MS = Long.getLong("mme.heapTrimQuietMs", 3000);
    private static volatile long lastNanos;
    private static volatile boolean dirty;
    private static volatile long trims;
    /** A scrape seen within this long: the collection waits for the next one to pass. */
    private static final long SCRAPED_WITHIN_NS = TimeUnit.MINUTES.toNanos(5);
    private static final long WAIT_FOR_SCRAPE_MS = 60_000;
    private static final Object SCRAPES = new Object();
    private static volatile long lastScrapeNanos;
    private static volatile int scrapes; // `serve`'s own check at start is one: a scraper makes more

    private HeapTrim() {}

    /** Something happened that may have left garbage or grown the heap (on the event loop: no locks). */
    static void note() {
        lastNanos = System.nanoTime();
        if (!dirty) {
            dirty = true;
        }
    }

    /** A scrape's answer was handed to MMS to send. */
    static void scraped() {
        synchronized (SCRAPES) {
            lastScrapeNanos = System.nanoTime();
            if (scrapes < 2) {
                scrapes++;
            }
            SCRAPES.notifyAll();
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

    /** Where /metrics is scraped, waits until the next scrape has been answered. */
    private static void afterNextScrape() throws InterruptedException {
        synchronized (SCRAPES) {
            long seen = lastScrapeNanos;
            if (scrapes < 2 || System.nanoTime() - seen > SCRAPED_WITHIN_NS) {
                return;
            }
            long deadline = System.currentTimeMillis() + WAIT_FOR_SCRAPE_MS;
            while (lastScrapeNanos == seen) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) {
                    return;
                }
                SCRAPES.wait(left);
            }
        }
        Thread.sleep(20); // the answer leaves on MMS's event loop
    }

    private static void run() {
        long tick = Math.min(1000, QUIET_MS);
        try {
            while (true) {
                Thread.sleep(tick);
                if (dirty && System.nanoTime() - lastNanos >= TimeUnit.MILLISECONDS.toNanos(QUIET_MS)) {
                    dirty = false;
                    afterNextScrape();
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
