package com.mme.mms;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

/**
 * Timestamps of a model load's steps in the front, for the bench's load breakdown (`python -m bench
 * --load-breakdown`). Off unless serve was given MME_STAGE_LOG; then each step appends one line
 * "load STAGE NANOS MODEL" to that file, as the zygote and the hosts do (container/stage_clock.py).
 * System.nanoTime is CLOCK_MONOTONIC on Linux, the clock the Python side and the bench read.
 */
final class LoadClock {

    private static final OutputStream OUT = StageLog.open("");

    private LoadClock() {}


    static void mark(String model, String stage) {
        if (OUT == null) {
            return;
        }
        byte[] line = ("load " + stage + " " + System.nanoTime() + " " + model + "\n").getBytes(StandardCharsets.UTF_8);
        synchronized (OUT) {
            try {
                OUT.write(line); // one write per line
            } catch (IOException e) {
                // a timing aid only
            }
        }
    }
}
