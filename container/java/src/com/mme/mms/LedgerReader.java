package com.mme.mms;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The memory ledger (container/ledger.py) as the plugin reads it: one file per backend process, named
 * by its pid, holding per model a "BYTES NAME" line and then one "skew\tLIBRARY\tWRITTEN\tINSTALLED" line
 * per library version skew the handler found when it loaded the model (handler/versions.py); a model's own
 * worker holds one model, a shared host many (its record starts with a "host" line). Read at scrape time
 * and for GET /models/{name}; the
 * directory is listed again only when it changed (a record is replaced by a rename, which changes it),
 * and then only the files that are new or were replaced (another inode) are read again.
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

    /** One model in a process's record. */
    static final class Entry {
        final long pid;
        final String name;
        final long bytes;
        final List<Skew> skews;
        /** Held by one of the shared host processes (MME_BACKEND=hosts), not a process of its own. */
        final boolean sharedHost;

        Entry(long pid, String name, long bytes, List<Skew> skews, boolean sharedHost) {
            this.pid = pid;
            this.name = name;
            this.bytes = bytes;
            this.skews = skews;
            this.sharedHost = sharedHost;
        }
    }

    private static final Path PROC = Paths.get("/proc");
    /** A shared host's record starts with this line (container/ledger.py). */
    private static final String HOST_LINE = "host";
    private static final String HOST_EVENTS = "host-events";
    private final Path dir;
    private FileTime seen;
    /** A file as last read: which inode it was, and the models it listed. */
    private static final class Record {
        final Object fileKey;
        final List<Entry> models;

        Record(Object fileKey, List<Entry> models) {
            this.fileKey = fileKey;
            this.models = models;
        }
    }

    private Map<Long, Record> records = Map.of();
    private List<Entry> entries = List.of();

    LedgerReader(String dir) {
        this.dir = dir == null || dir.isEmpty() ? null : Paths.get(dir);
    }

    /** The models the records now in the directory list (read again only if it changed). */
    synchronized List<Entry> entries() {
        if (dir == null) {
            return List.of();
        }
        try {
            FileTime now = Files.getLastModifiedTime(dir);
            if (!now.equals(seen)) {
                Map<Long, Record> fresh = new HashMap<>();
                List<Entry> all = new ArrayList<>();
                try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                    for (Path p : ds) {
                        long pid = pid(p.getFileName().toString());
                        if (pid < 0) {
                            continue;
                        }
                        Object key = fileKey(p);
                        Record known = records.get(pid);
                        Record r = known != null && key != null && key.equals(known.fileKey)
                                ? known : read(pid, p, key);
                        if (r != null) {
                            fresh.put(pid, r);
                            all.addAll(r.models);
                        }
                    }
                }
                records = fresh;
                entries = all;
                seen = now;
            }
        } catch (IOException e) {
            return List.of();
        }
        return entries;
    }

    private static Object fileKey(Path p) {
        try {
            return Files.readAttributes(p, BasicFileAttributes.class).fileKey();
        } catch (IOException e) {
            return null;
        }
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

    private static Record read(long pid, Path p, Object key) {
        try {
            List<Entry> models = new ArrayList<>(1);
            List<Skew> skews = null; // the skew lines that follow belong to the model line before them
            boolean host = false;
            for (String line : Files.readString(p).split("\n")) {
                if (line.equals(HOST_LINE)) {
                    host = true;
                    continue;
                }
                String[] f = line.split("\t");
                if (f.length == 4 && f[0].equals("skew")) {
                    if (skews != null) {
                        skews.add(new Skew(f[1], f[2], f[3]));
                    }
                    continue;
                }
                String[] model = line.trim().split(" ", 2);
                if (model.length == 2) {
                    skews = new ArrayList<>(0);
                    models.add(new Entry(pid, model[1], Long.parseLong(model[0]), skews, host));
                }
            }
            return new Record(key, models);
        } catch (IOException | NumberFormatException e) {
            return null; // replaced or removed meanwhile
        }
    }

    /**
     * Records of live processes whose model is registered. An unloaded model's worker may still be
     * exiting (or a zombie, which /proc lists); Python sweeps dead processes' records on its next load.
     */
    List<Entry> live(Set<String> registered) {
        List<Entry> all = entries();
        List<Entry> out = new ArrayList<>();
        if (all.isEmpty()) {
            return out;
        }
        Set<Long> pids = livePids();
        for (Entry e : all) {
            if (registered.contains(e.name)
                    && (pids == null ? alive(e.pid) : pids.contains(e.pid))) {
                out.add(e);
            }
        }
        return out;
    }

    /** The record of one model by a live process, or null: for GET /models/{name}. */
    Entry entryOf(String name) {
        for (Entry e : entries()) {
            if (e.name.equals(name) && alive(e.pid)) {
                return e;
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

    /**
     * The zygote's counts of host events (container/host_events.py: "FAMILY LABEL COUNT" lines), in file
     * order; empty where there are no shared hosts (no file).
     */
    List<String[]> hostEvents() {
        List<String[]> out = new ArrayList<>();
        if (dir == null) {
            return out;
        }
        try {
            for (String line : Files.readString(dir.resolve(HOST_EVENTS)).split("\n")) {
                String[] f = line.trim().split(" ");
                if (f.length == 3) {
                    Long.parseLong(f[2]);
                    out.add(f);
                }
            }
        } catch (IOException | NumberFormatException e) {
            return List.of();
        }
        return out;
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
