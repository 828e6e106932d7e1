/* The wall map's squads as one canvas layer: 10,000 squads drawn in a few canvas paths, not
 * 10,000 Leaflet markers (each with its own path, events and tooltip). The layer redraws when
 * squads change (about once a second) or the map moves; one shared tooltip follows the
 * pointer to the nearest squad.
 *
 *   const layer = new SquadLayer({ style(row) -> {fill, stroke, radius, dashed}, tip(row) -> html })
 *   layer.addTo(map); layer.set(rows) / layer.update(rows, goneIds); layer.count()
 * A row is what /ws/map sends: [id, unit, lat, lon, flags] (flags: 1 on duty, 2 busy). */
(function () {
  "use strict";

  const HOVER_PX = 8; // a pointer this close to a squad shows its tooltip

  window.SquadLayer = L.Layer.extend({
    initialize(options) {
      this._style = options.style;
      this._tip = options.tip;
      this._rows = new Map(); // id -> row
      this._drawn = []; // x, y, row, x, y, row… of the last draw, for hovering
      this._frame = 0;
      this._sprites = new Map(); // style -> a small canvas with its circle
      this.draws = 0; // redraws so far (the frames-per-second tool looks)
    },

    onAdd(map) {
      this._map = map;
      this._canvas = L.DomUtil.create("canvas", "squad-layer leaflet-zoom-hide");
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
    },

    /* Every squad at once (a snapshot). */
    set(rows) {
      this._rows = new Map(rows.map((row) => [row[0], row]));
      this._schedule();
    },

    /* Rows new or changed, and the ids of squads gone. */
    update(rows, gone) {
      for (const row of rows || []) this._rows.set(row[0], row);
      for (const id of gone || []) this._rows.delete(id);
      if ((rows && rows.length) || (gone && gone.length)) this._schedule();
    },

    rows() { return this._rows.values(); },
    get(id) { return this._rows.get(id); },
    count() { return this._rows.size; },
    restyle() { this._sprites.clear(); this._schedule(); },

    _reset() {
      const size = this._map.getSize();
      const ratio = window.devicePixelRatio || 1;
      this._canvas.width = size.x * ratio;
      this._canvas.height = size.y * ratio;
      this._canvas.style.width = size.x + "px";
      this._canvas.style.height = size.y + "px";
      L.DomUtil.setPosition(this._canvas, this._map.containerPointToLayerPoint([0, 0]));
      this._draw();
    },

    _schedule() {
      if (!this._frame) this._frame = L.Util.requestAnimFrame(() => { this._frame = 0; this._draw(); });
    },

    /* Each style is drawn once into a small sprite; a squad is one drawImage of its
     * style's sprite (in software rendering, 10,000 anti-aliased arcs cost a wall hundreds of
     * milliseconds a frame; 10,000 sprite copies a few). */
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

    _draw() {
      const map = this._map;
      if (!map) return;
      const started = performance.now();
      const ratio = window.devicePixelRatio || 1;
      const ctx = this._canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      const size = map.getSize();
      ctx.clearRect(0, 0, size.x, size.y);
      const drawn = [];
      const bySquadKind = new Map(); // unit|flags -> sprite: one style lookup per kind
      // container point = projected point - (pixel origin + the layer point of the corner)
      const origin = map.getPixelOrigin().add(map.containerPointToLayerPoint([0, 0]));
      const zoom = map.getZoom();
      for (const row of this._rows.values()) {
        // project() and one subtraction: latLngToContainerPoint's conversions, inlined
        const projected = map.project([row[2], row[3]], zoom);
        const x = Math.round(projected.x - origin.x);
        const y = Math.round(projected.y - origin.y);
        if (x < -10 || y < -10 || x > size.x + 10 || y > size.y + 10) continue;
        const kind = row[1] + "|" + row[4];
        let sprite = bySquadKind.get(kind);
        if (!sprite) bySquadKind.set(kind, (sprite = this._sprite(this._style(row))));
        ctx.drawImage(sprite.canvas, x - sprite.half, y - sprite.half, 2 * sprite.half, 2 * sprite.half);
        drawn.push(x, y, row);
      }
      this._drawn = drawn;
      this.draws += 1;
      this.drawMs = performance.now() - started;
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
