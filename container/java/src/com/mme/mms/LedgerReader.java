package com.mme.mms;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The memory ledger (container/ledger.py) as the plugin reads it: one file per backend process, named
 * by its pid, "BYTES NAME" on the first line and then one "skew\tLIBRARY\tWRITTEN\tINSTALLED" line per
 * library version skew the handler found when it loaded the model (handler/versions.py). Read at scrape
 * time and for GET /models/{name}; the directory is listed again only when it changed, and then only
 * the records of new pids are read (a record is written once per process; a pid is not reused while
 * its record exists, as the zygote removes the record when it reaps the process).
 */
final class LedgerReader {

    /** A library version the artifact was written with, against the installed one. */
    static final class Skew {
        final String library;
        final String written;
        final String installed;

        Skew(String library, String written, String installed) {
            this.library = library;
            this.written = written;
            this.installed = installed;
        }
    }

    /** One process's record. */
    static final class Entry {
        final long pid;
        final String name;
        final long bytes;
        final List<Skew> skews;

        Entry(long pid, String name, long bytes, List<Skew> skews) {
            this.pid = pid;
            this.name = name;
            this.bytes = bytes;
            this.skews = skews;
        }
    }

    private static final Path PROC = Paths.get("/proc");
    private final Path dir;
    private FileTime seen;
    private Map<Long, Entry> entries = Map.of();

    LedgerReader(String dir) {
        this.dir = dir == null || dir.isEmpty() ? null : Paths.get(dir);
    }

    /** The records now in the directory (read again only if it changed since the last call). */
    synchronized Map<Long, Entry> entries() {
        if (dir == null) {
            return Map.of();
        }
        try {
            FileTime now = Files.getLastModifiedTime(dir);
            if (!now.equals(seen)) {
                Map<Long, Entry> fresh = new HashMap<>();
                try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                    for (Path p : ds) {
                        long pid = pid(p.getFileName().toString());
                        if (pid < 0) {
                            continue;
                        }
                        Entry known = entries.get(pid);
                        Entry e = known != null ? known : read(pid, p);
                        if (e != null) {
                            fresh.put(pid, e);
                        }
                    }
                }
                entries = fresh;
                seen = now;
            }
        } catch (IOException e) {
            return Map.of();
        }
        return entries;
    }

    private static long pid(String file) {
        if (file.isEmpty() || file.length() > 18) {
            return -1;
        }
        for (int i = 0; i < file.length(); i++) {
            char c = file.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
        }
        return Long.parseLong(file);
    }

    private static Entry read(long pid, Path p) {
        try {
            String[] lines = Files.readString(p).split("\n");
            String[] first = lines[0].trim().split(" ", 2);
            if (first.length != 2) {
                return null;
            }
            List<Skew> skews = new ArrayList<>(0);
            for (int i = 1; i < lines.length; i++) {
                String[] f = lines[i].split("\t");
                if (f.length == 4 && f[0].equals("skew")) {
                    skews.add(new Skew(f[1], f[2], f[3]));
                }
            }
            return new Entry(pid, first[1], Long.parseLong(first[0]), skews);
        } catch (IOException | NumberFormatException e) {
            return null; // replaced or removed meanwhile
        }
    }

    /**
     * Records of live processes whose model is registered. An unloaded model's worker may still be
     * exiting (or a zombie, which /proc lists); Python sweeps dead processes' records on its next load.
     */
    List<Entry> live(Set<String> registered) {
        Map<Long, Entry> all = entries();
        List<Entry> out = new ArrayList<>();
        if (all.isEmpty()) {
            return out;
        }
        Set<Long> pids = livePids();
        for (Entry e : all.values()) {
            if (registered.contains(e.name)
                    && (pids == null ? alive(e.pid) : pids.contains(e.pid))) {
                out.add(e);
            }
        }
        return out;
    }

    /** The skews recorded by the live process(es) of one model: for GET /models/{name}. */
    List<Skew> skewsOf(String name) {
        for (Entry e : entries().values()) {
            if (e.name.equals(name) && alive(e.pid)) {
                return e.skews;
            }
        }
        return null;
    }

    /** How many processes /proc lists (the warm-up runs the listing a scrape does). */
    int liveProcesses() {
        Set<Long> pids = livePids();
        return pids == null ? 0 : pids.size();
    }

    private static boolean alive(long pid) {
        return ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
    }

    /**
     * The pids in /proc, or null where there is no /proc. One directory listing costs far less than
     * a ProcessHandle lookup per ledger entry (a /proc/PID/stat read each: ~30 ms per scrape at
     * 1,000 models).
     */
    private static Set<Long> livePids() {
        Set<Long> live = new HashSet<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(PROC)) {
            for (Path p : ds) {
                long pid = pid(p.getFileName().toString());
                if (pid >= 0) {
                    live.add(pid);
                }
            }
        } catch (IOException e) {
            return null;
        }
        return live;
    }

    long zygoteRestarts() {
        if (dir == null) {
            return 0;
        }
        try {
            return Long.parseLong(Files.readString(dir.resolve("zygote-restarts")).trim());
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
    }
}
