/* The wall map's squads as one canvas layer: 10,000 squads are one canvas, not 10,000 Leaflet
 * markers (each with its own path, events and tooltip). One shared tooltip follows the
 * pointer to the nearest squad.
 *
 * Smooth with 10,000 squads: each squad is a copy of a small pre-drawn sprite (anti-aliased
 * arcs cost a software-rendered wall far more), and a redraw after an update (about once a
 * second) is spread over frames: a few milliseconds of drawing per frame into a hidden
 * canvas, shown whole when done, so no frame waits for all 10,000. A moved or zoomed map is
 * drawn at once (the old picture would be in the wrong place).
 *
 *   const layer = new SquadLayer({ style(row) -> {fill, stroke, radius, dashed}, tip(row) -> html })
 *   layer.addTo(map); layer.set(rows) / layer.update(rows, goneIds); layer.count()
 * A row is what /ws/map sends: [id, unit, lat, lon, flags] (flags: 1 on duty, 2 busy). */
(function () {
  "use strict";

  const HOVER_PX = 8; // a pointer this close to a squad shows its tooltip
  const FRAME_BUDGET_MS = 6; // drawing per frame while a redraw is spread over frames

  window.SquadLayer = L.Layer.extend({
    initialize(options) {
      this._style = options.style;
      this._tip = options.tip;
      this._rows = new Map(); // id -> row
      this._drawn = []; // x, y, row, x, y, row… of the shown picture, for hovering
      this._job = null; // the redraw under way: {rows, next, drawn, ...}
      this._again = false; // squads changed while a redraw was under way
      this._sprites = new Map(); // style -> a small canvas with its circle
      this.draws = 0; // finished redraws (the frames-per-second tool looks)
      this.drawMs = 0; // drawing time of the newest redraw, over all its frames
    },

    onAdd(map) {
      this._map = map;
      this._canvas = L.DomUtil.create("canvas", "squad-layer leaflet-zoom-hide");
      this._back = document.createElement("canvas"); // where a spread redraw is made
      map.getPane("overlayPane").appendChild(this._canvas);
      this._tooltip = L.tooltip({ className: "tip", direction: "top", offset: [0, -6] });
      map.on("moveend zoomend resize viewreset", this._reset, this);
      map.on("mousemove", this._hover, this);
      map.on("mouseout", this._unhover, this);
      this._reset();
    },

    onRemove(map) {
      L.DomUtil.remove(this._canvas);
      map.off("moveend zoomend resize viewreset", this._reset, this);
      map.off("mousemove", this._hover, this);
      map.off("mouseout", this._unhover, this);
      map.closeTooltip(this._tooltip);
      this._job = null;
    },

    /* Every squad at once (a snapshot). */
    set(rows) {
      this._rows = new Map(rows.map((row) => [row[0], row]));
      this._redraw();
    },

    /* Rows new or changed, and the ids of squads gone. */
    update(rows, gone) {
      for (const row of rows || []) this._rows.set(row[0], row);
      for (const id of gone || []) this._rows.delete(id);
      if ((rows && rows.length) || (gone && gone.length)) this._redraw();
    },

    rows() { return this._rows.values(); },
    get(id) { return this._rows.get(id); },
    count() { return this._rows.size; },
    restyle() { this._sprites.clear(); this._redraw(); },

    /* The map moved, zoomed or resized: place the canvas over the map again and draw now. */
    _reset() {
      const size = this._map.getSize();
      const ratio = window.devicePixelRatio || 1;
      for (const canvas of [this._canvas, this._back]) {
        canvas.width = size.x * ratio;
        canvas.height = size.y * ratio;
      }
      this._canvas.style.width = size.x + "px";
      this._canvas.style.height = size.y + "px";
      L.DomUtil.setPosition(this._canvas, this._map.containerPointToLayerPoint([0, 0]));
      this._job = this._start();
      this._work(Infinity);
    },

    /* Squads changed: a redraw spread over the next frames (or after the one under way). */
    _redraw() {
      if (this._job) {
        this._again = true;
        return;
      }
      this._job = this._start();
      const frame = () => {
        if (!this._job) return;
        if (!this._work(FRAME_BUDGET_MS)) L.Util.requestAnimFrame(frame);
        else if (this._again) {
          this._again = false;
          this._redraw();
        }
      };
      L.Util.requestAnimFrame(frame);
    },

    _start() {
      const map = this._map;
      const ratio = window.devicePixelRatio || 1;
      const ctx = this._back.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      const size = map.getSize();
      ctx.clearRect(0, 0, size.x, size.y);
      return {
        ctx, size, rows: Array.from(this._rows.values()), next: 0, drawn: [], ms: 0,
        zoom: map.getZoom(),
        // container point = projected point - (pixel origin + the layer point of the corner)
        origin: map.getPixelOrigin().add(map.containerPointToLayerPoint([0, 0])),
        sprites: new Map(), // unit|flags -> sprite: one style lookup per kind of squad
      };
    },

    /* Draw the job's next squads for up to ``budget`` ms; true once it is shown. */
    _work(budget) {
      const job = this._job;
      const map = this._map;
      const started = performance.now();
      const { ctx, size, rows, origin, zoom, drawn } = job;
      while (job.next < rows.length) {
        for (const stop = Math.min(rows.length, job.next + 250); job.next < stop; job.next += 1) {
          const row = rows[job.next];
          const projected = map.project([row[2], row[3]], zoom);
          const x = Math.round(projected.x - origin.x);
          const y = Math.round(projected.y - origin.y);
          if (x < -10 || y < -10 || x > size.x + 10 || y > size.y + 10) continue;
          const kind = row[1] + "|" + row[4];
          let sprite = job.sprites.get(kind);
          if (!sprite) job.sprites.set(kind, (sprite = this._sprite(this._style(row))));
          ctx.drawImage(sprite.canvas, x - sprite.half, y - sprite.half, 2 * sprite.half, 2 * sprite.half);
          drawn.push(x, y, row);
        }
        if (performance.now() - started > budget) break;
      }
      job.ms += performance.now() - started;
      if (job.next < rows.length) return false;
      const front = this._canvas.getContext("2d");
      front.setTransform(1, 0, 0, 1, 0, 0);
      front.clearRect(0, 0, this._canvas.width, this._canvas.height);
      front.drawImage(this._back, 0, 0);
      this._drawn = drawn;
      this._job = null;
      this.draws += 1;
      this.drawMs = job.ms;
      return true;
    },

    /* Each style is drawn once into a small sprite. */
    _sprite(style) {
      const key = style.fill + "|" + style.stroke + "|" + style.radius + "|" + (style.dashed ? 1 : 0);
      let sprite = this._sprites.get(key);
      if (sprite) return sprite;
      const ratio = window.devicePixelRatio || 1;
      const half = Math.ceil(style.radius + 2);
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 2 * half * ratio;
      const ctx = canvas.getContext("2d");
      ctx.scale(ratio, ratio);
      ctx.beginPath();
      ctx.arc(half, half, style.radius, 0, 2 * Math.PI);
      if (style.fill) {
        ctx.fillStyle = style.fill;
        ctx.fill();
      }
      if (style.stroke) {
        ctx.setLineDash(style.dashed ? [2, 2] : []);
        ctx.lineWidth = style.width || 1.5;
        ctx.strokeStyle = style.stroke;
        ctx.stroke();
      }
      sprite = { canvas, half };
      this._sprites.set(key, sprite);
      return sprite;
    },

    _hover(event) {
      const p = event.containerPoint;
      const drawn = this._drawn;
      let best = null;
      let bestDistance = HOVER_PX * HOVER_PX;
      for (let i = 0; i < drawn.length; i += 3) {
        const dx = drawn[i] - p.x;
        const dy = drawn[i + 1] - p.y;
        const distance = dx * dx + dy * dy;
        if (distance <= bestDistance) {
          best = drawn[i + 2];
          bestDistance = distance;
        }
      }
      if (!best) return this._unhover();
      this._tooltip.setLatLng([best[2], best[3]]).setContent(this._tip(best));
      if (!this._map.hasLayer(this._tooltip)) this._tooltip.addTo(this._map);
    },

    _unhover() {
      if (this._map && this._map.hasLayer(this._tooltip)) this._map.removeLayer(this._tooltip);
    },
  });
})();
