package com.mme.mms;

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * The Java front's side of the bench's latency breakdown (MME_STAGE_LOG, container/stage_clock.py): off,
 * and free, unless serve was given MME_STAGE_LOG. Then every invoke appends two lines to that path plus
 * ".java", in System.nanoTime (CLOCK_MONOTONIC, the clock of the workers' lines and of the bench):
 * "H read answer" from the client's event loop (request decoded, answer handed to Netty's HTTP encoder)
 * and "W dispatch written reply" from the model's worker (MMS's worker thread took the job, the backend
 * event loop wrote it, the backend event loop read the reply). The bench pairs them with its requests by
 * time: it sends one request at a time.
 */
final class JavaStages {

    private static final FileOutputStream OUT = StageLog.open(".java");
    static final boolean ON = OUT != null;

    private JavaStages() {}


    static void line(char kind, long... marks) {
        StringBuilder b = new StringBuilder(64).append(kind);
        for (long m : marks) {
            b.append(' ').append(m);
        }
        b.append('\n');
        try {
            OUT.write(b.toString().getBytes(StandardCharsets.US_ASCII)); // one write: O_APPEND keeps it whole
        } catch (IOException e) {
            // a bench aid: a lost line only leaves its request unmatched
        }
    }
}
