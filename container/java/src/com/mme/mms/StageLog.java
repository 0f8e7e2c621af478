package com.mme.mms;

import java.io.FileOutputStream;
import java.io.IOException;

/**
 * The stage log's file, as serve validated it (MME_STAGE_LOG, passed on as _MME_STAGE_LOG): the bench's
 * timing aid for loads (LoadClock) and warm requests (JavaStages). Opened for appending, so the lines of
 * several processes stay whole; null when serve was not given one.
 */
final class StageLog {

    private StageLog() {}

    static FileOutputStream open(String suffix) {
        String path = System.getenv("_MME_STAGE_LOG");
        if (path == null || path.isEmpty()) {
            return null;
        }
        try {
            return new FileOutputStream(path + suffix, true);
        } catch (IOException e) {
            return null;
        }
    }
}
